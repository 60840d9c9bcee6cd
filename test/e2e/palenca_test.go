package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/utils/ptr"

	"github.com/hookrelay/hookrelay/internal/routes"
)

// Palenca's documented examples: the data of each, and the webhook_action.
var (
	// palenca-gig-tutorial.txt, the first notification (login.created).
	tutorialLoginCreated = map[string]any{
		"user_id": "d1c9b98b-3190-479e-99db-04060ff3997f", "account_id": "cb39ee15-f29f-427d-9119-0c627575610d",
		"external_id": "None", "platform": "uber", "status_details": "pending_for_data", "webhook_action": "login.created",
	}
	// palenca-gig-tutorial.txt, the second notification (login.success).
	tutorialLoginSuccess = map[string]any{
		"user_id": "d1c9b98b-3190-479e-99db-04060ff3997f", "account_id": "cb39ee15-f29f-427d-9119-0c627575610d",
		"external_id": "None", "platform": "uber", "status_details": nil, "webhook_action": "login.success",
	}
	// palenca-webhooks.txt, the example payload (account.created).
	webhooksAccountCreated = map[string]any{
		"user_id": "f2a6d844-22ee-455d-9d2c-deb413d78b74", "account_id": "d86efb5b-4bbf-4f28-8576-9612430bc5e2",
		"country": "mx", "platform": "uber", "webhook_action": "account.created",
	}
	// palencaFields are all the fields the two documents show in data.
	palencaFields = []string{"user_id", "account_id", "country", "platform", "external_id", "status_details", "webhook_action"}
)

// palencaEvent publishes a documented example: its webhook_action is the
// event type, the other fields are the event's data.
func palencaEvent(id string, example map[string]any, sandbox bool) string {
	data := map[string]any{}
	for field, value := range example {
		if field != "webhook_action" {
			data[field] = value
		}
	}
	return jsonBody(map[string]any{"id": id, "type": example["webhook_action"], "sandbox": sandbox, "data": data})
}

// expectPalencaBody checks a body field by field against a documented
// example: webhook_url around data, every field of the example as
// documented, and every other field of the two documents null.
func expectPalencaBody(g Gomega, body []byte, webhookURL string, example map[string]any) {
	var got struct {
		WebhookURL *string        `json:"webhook_url"`
		Data       map[string]any `json:"data"`
	}
	var top map[string]any
	g.Expect(json.Unmarshal(body, &top)).To(Succeed())
	g.Expect(top).To(HaveLen(2), "only webhook_url and data: %s", body)
	g.Expect(json.Unmarshal(body, &got)).To(Succeed())
	g.Expect(got.WebhookURL).To(HaveValue(Equal(webhookURL)))
	g.Expect(slices.Sorted(func(yield func(string) bool) {
		for field := range got.Data {
			if !yield(field) {
				return
			}
		}
	})).To(Equal(slices.Sorted(slices.Values(palencaFields))), "data has exactly the documented fields")
	for _, field := range palencaFields {
		want, documented := example[field]
		if !documented || want == nil {
			g.Expect(got.Data).To(HaveKeyWithValue(field, BeNil()), "%s is null or not in the example: null", field)
			continue
		}
		g.Expect(got.Data).To(HaveKeyWithValue(field, want), "%s as documented", field)
	}
}

// TestPalencaContract: config/samples/palenca.yaml as shipped (URLs
// rewritten to the test's receivers), on a dispatcher with default flags,
// delivers what the two Palenca documents show: the tutorial's wrapped body
// with every documented field (missing ones null, a missing user_id too),
// all events selected (account.created as well as login.*), sandbox events
// only to the sandbox webhook, Standard Webhooks signatures and no other
// signature family; success only on 200 or 201, within 30 s, with up to
// three more calls minutes apart.
func TestPalencaContract(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())

	production := newReceiver(t, answerWith(http.StatusCreated))
	sandbox := newReceiver(t, answerWith(http.StatusOK))
	productionURL, sandboxURL := production.URL+"/webhooks/palenca", sandbox.URL+"/webhooks/palenca-sandbox"
	endpoints := applySample(t, namespace, "palenca.yaml", map[string]string{"palenca-production": productionURL, "palenca-sandbox": sandboxURL})

	for name, endpoint := range endpoints {
		route := compiledRoute(g, endpoint)
		g.Expect(route.Timeout.Duration).To(Equal(30*time.Second), "%s: a 200 or 201 within 30 seconds", name)
		g.Expect(route.SuccessStatusCodes).To(Equal([]int32{200, 201}), "%s: only 200 or 201", name)
		g.Expect(route.RetrySchedule).To(Equal(durations("3m", "3m", "3m")), "%s: up to three more calls, a few minutes apart", name)
		g.Expect(route.JitterPercent).To(Equal(ptr.To[int32](0)), "%s: calls exactly 3 minutes apart", name)
		g.Expect(route.AutoDisableAfter).To(BeZero(), "%s: Palenca never disables a webhook", name)
		g.Expect(route.KeepOnGone).To(BeTrue(), "%s: a 410 is retried like any other answer", name)
		g.Expect(route.Strict()).To(BeTrue(), "%s: login.created before login.success", name)
		g.Expect(route.Signing).To(Equal(&routes.Signing{Schemes: []string{routes.SchemeStandardWebhooks}}), "%s: Standard Webhooks only", name)
		g.Expect(route.Subscriptions).To(HaveLen(1))
		g.Expect(route.Subscriptions[0].EventTypes).To(Equal([]string{"*"}), "%s: all events selected", name)
	}
	g.Expect(compiledRoute(g, endpoints["palenca-sandbox"]).Sandbox).To(BeTrue())
	g.Expect(compiledRoute(g, endpoints["palenca-production"]).Sandbox).To(BeFalse())

	// A missing user_id (and a country of null) must not fail the transform.
	withoutUser := map[string]any{"account_id": "628cdf56-95f1-4397-a154-281112781240", "country": nil, "platform": "imss", "webhook_action": "login.error"}
	for _, event := range []struct {
		id      string
		example map[string]any
		sandbox bool
	}{
		{"evt_login_created", tutorialLoginCreated, false},
		{"evt_login_success", tutorialLoginSuccess, true},
		{"evt_account_created", webhooksAccountCreated, false},
		{"evt_without_user", withoutUser, false},
	} {
		status, answer := d.publish(t, namespace, palencaEvent(event.id, event.example, event.sandbox))
		g.Expect(status).To(Equal(http.StatusAccepted), "%s: %v", event.id, answer)
		g.Expect(answer["deliveries"]).To(Equal(1.0), "%s: one endpoint of its kind (sandbox or production)", event.id)
	}
	g.Eventually(production.eventIDs).WithTimeout(10*time.Second).Should(ConsistOf("evt_login_created", "evt_account_created", "evt_without_user"),
		"each production event once: 201 is a success")
	g.Eventually(sandbox.eventIDs).WithTimeout(10 * time.Second).Should(Equal([]string{"evt_login_success"}))

	check := func(r *receiver, name, url, id string, example map[string]any) {
		t.Helper()
		for _, got := range r.got() {
			if got.EventID() != id {
				continue
			}
			expectPalencaBody(g, got.Body, url, example)
			g.Expect(signatureHeaders(got.Header)).To(Equal([]string{"Webhook-Id", "Webhook-Signature", "Webhook-Timestamp"}),
				"Standard Webhooks headers and no other signature family")
			g.Expect(verifyStandard(got.Header, secretOf(t, endpoints[name]), got.Body)).To(Succeed(), "Standard Webhooks reference library")
			logCapture(t, url, got)
			return
		}
		t.Fatalf("no delivery of %s", id)
	}
	check(production, "palenca-production", productionURL, "evt_login_created", tutorialLoginCreated)
	check(sandbox, "palenca-sandbox", sandboxURL, "evt_login_success", tutorialLoginSuccess)
	check(production, "palenca-production", productionURL, "evt_account_created", webhooksAccountCreated)
	check(production, "palenca-production", productionURL, "evt_without_user", withoutUser)

	// 202 is not a success for Palenca: the delivery stays pending with its
	// next call a schedule step (3m) after the first, not sooner.
	production.setAnswer(answerWith(http.StatusAccepted))
	status, _ := d.publish(t, namespace, palencaEvent("evt_login_incomplete", map[string]any{
		"user_id": "d1c9b98b-3190-479e-99db-04060ff3997f", "webhook_action": "login.incomplete"}, false))
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/evt_login_incomplete")
		g.Expect(err).NotTo(HaveOccurred())
		defer response.Body.Close()
		var eventLog struct {
			Deliveries []struct {
				State         string
				NextAttemptAt time.Time `json:"next_attempt_at"`
				Attempts      []struct {
					StartedAt  time.Time `json:"started_at"`
					StatusCode int       `json:"status_code"`
				}
			}
		}
		g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
		g.Expect(eventLog.Deliveries).To(HaveLen(1))
		delivery := eventLog.Deliveries[0]
		g.Expect(delivery.Attempts).To(HaveLen(1))
		g.Expect(delivery.Attempts[0].StatusCode).To(Equal(http.StatusAccepted))
		g.Expect(delivery.State).To(Equal("pending"), "a 202 is retried")
		g.Expect(delivery.NextAttemptAt.Sub(delivery.Attempts[0].StartedAt)).To(BeNumerically(">=", 3*time.Minute))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}
