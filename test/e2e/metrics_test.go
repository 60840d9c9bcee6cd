package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/controllers"
	"github.com/hookrelay/hookrelay/internal/monitoring"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestMetrics: after a run with successes, 4xx and 5xx failures, a refused
// connection, an auto-disable, a held delivery and refused publishes, the
// dispatcher's /metrics (401 without a token, 403 for a token without
// hookrelay-metrics-reader) and the manager's over HTTPS show each metric
// of the contract with its labels and counts; every metric the alerts and
// dashboards query is among those exported.
func TestMetrics(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	for _, roles := range []string{"api_roles.yaml", "metrics_reader_role.yaml"} {
		_, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", roles))
		g.Expect(err).NotTo(HaveOccurred(), stderr)
	}
	tokens := serviceAccountTokens(t, namespace, "producer", "scraper", "nobody")
	bind(t, namespace, "producer", "hookrelay-publisher", false)
	bind(t, namespace, "scraper", "hookrelay-metrics-reader", true)

	// A failed authentication budget of 2, refilled slowly: the third
	// tokenless publish gets 429.
	d := startDispatcher(t, t.TempDir(), "--insecure-no-auth=false", "--auth-failure-burst=2", "--auth-failure-rate=0.001",
		"--max-body-bytes=1024", "--metrics-per-endpoint")
	onlyOnce := func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}}
		spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](0)}
	}
	endpoint(t, namespace, "ok", newReceiver(t, answerWith(http.StatusOK)).URL, []string{"ok.sent"}, onlyOnce)
	endpoint(t, namespace, "client", newReceiver(t, answerWith(http.StatusBadRequest)).URL, []string{"client.sent"}, onlyOnce)
	endpoint(t, namespace, "refused", newRefusingPort(t).URL, []string{"refused.sent"}, onlyOnce)
	server := endpoint(t, namespace, "server", newReceiver(t, answerWith(http.StatusInternalServerError)).URL, []string{"server.sent"},
		func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
			onlyOnce(spec)
			spec.AutoDisable.AfterConsecutiveFailures = ptr.To[int32](1)
		})

	publish := func(token, body string) int {
		status, _ := d.publishAs(g, namespace, token, body)
		return status
	}
	event := func(eventType string) string { return `{"type":"` + eventType + `","data":{}}` }
	for _, eventType := range []string{"ok.sent", "ok.sent", "client.sent", "refused.sent", "server.sent"} {
		g.Expect(publish(tokens["producer"], event(eventType))).To(Equal(http.StatusAccepted), eventType)
	}
	g.Eventually(func(g Gomega) metav1.ConditionStatus {
		return condition(g, server, hookrelayv1alpha1.ConditionDisabled)
	}).
		WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Equal(metav1.ConditionTrue))
	g.Expect(publish(tokens["producer"], event("server.sent"))).To(Equal(http.StatusAccepted), "held")

	// Refusals; the tokenless ones last, as they spend the address's
	// budget of failed authentications.
	for _, refused := range []struct {
		token, body string
		want        int
	}{
		{tokens["nobody"], event("ok.sent"), http.StatusForbidden},
		{tokens["producer"], `{"type":""}`, http.StatusBadRequest},
		{tokens["producer"], `{"type":"ok.sent","data":"` + strings.Repeat("x", 1024) + `"}`, http.StatusRequestEntityTooLarge},
		{"", event("ok.sent"), http.StatusUnauthorized},
		{"", event("ok.sent"), http.StatusUnauthorized},
		{"", event("ok.sent"), http.StatusTooManyRequests},
	} {
		g.Expect(publish(refused.token, refused.body)).To(Equal(refused.want))
	}

	scrape := func(g Gomega, client *http.Client, url, token string) (int, map[string]*dto.MetricFamily) {
		request, err := http.NewRequest(http.MethodGet, url, nil)
		g.Expect(err).NotTo(HaveOccurred())
		if token != "" {
			request.Header.Set("Authorization", "Bearer "+token)
		}
		response, err := client.Do(request)
		g.Expect(err).NotTo(HaveOccurred())
		defer response.Body.Close()
		if response.StatusCode != http.StatusOK {
			return response.StatusCode, nil
		}
		families, err := parseMetrics(response.Body)
		g.Expect(err).NotTo(HaveOccurred())
		return response.StatusCode, families
	}
	for token, want := range map[string]int{"": http.StatusUnauthorized, tokens["nobody"]: http.StatusForbidden} {
		status, _ := scrape(g, http.DefaultClient, d.URL+"/metrics", token)
		g.Expect(status).To(Equal(want))
	}

	ns := map[string]string{"namespace": namespace}
	with := func(name, value string) map[string]string {
		return map[string]string{"namespace": namespace, name: value}
	}
	var dispatcherFamilies map[string]*dto.MetricFamily
	// Counters move as the attempts' records are written: poll until the
	// last of them shows.
	g.Eventually(func(g Gomega) {
		status, families := scrape(g, http.DefaultClient, d.URL+"/metrics", tokens["scraper"])
		g.Expect(status).To(Equal(http.StatusOK))
		dispatcherFamilies = families
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"hookrelay_events_total", with("result", "accepted"), 6},
			{"hookrelay_attempts_total", with("class", "2xx"), 2},
			{"hookrelay_attempts_total", with("class", "4xx"), 2},
			{"hookrelay_attempts_total", with("class", "5xx"), 2},
			{"hookrelay_attempts_total", with("class", "network"), 2},
			{"hookrelay_deliveries_total", with("state", "succeeded"), 2},
			{"hookrelay_deliveries_total", with("state", "failed"), 3},
			{"hookrelay_deliveries_total", with("state", "held"), 1},
			{"hookrelay_held_deliveries", ns, 1},
			{"hookrelay_endpoints_disabled", ns, 1},
			{"hookrelay_queue_depth", ns, 0},
			{"hookrelay_oldest_pending_age_seconds", ns, 0},
			{"hookrelay_publish_to_first_attempt_seconds", ns, 5},
			{"hookrelay_publish_to_success_seconds", ns, 2},
			{"hookrelay_endpoint_held_deliveries", with("endpoint", "server"), 1},
			{"hookrelay_endpoint_disabled", with("endpoint", "server"), 1},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "400"}, 1},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "401"}, 2},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "403"}, 1},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "413"}, 1},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "429"}, 1},
			{"hookrelay_publishes_refused_total", map[string]string{"code": "503"}, 0},
			{"hookrelay_dispatcher_ready", nil, 1},
		} {
			g.Expect(families).To(HaveKey(c.name))
			g.Expect(sumOf(families[c.name], c.labels)).To(Equal(c.want), "%s%v", c.name, c.labels)
		}
		g.Expect(families["hookrelay_queue_depth"].GetMetric()).To(HaveLen(1), "one namespace has deliveries")
		for _, name := range []string{"hookrelay_store_disk_used_bytes", "hookrelay_store_disk_capacity_bytes"} {
			g.Expect(sumOf(families[name], nil)).To(BeNumerically(">", 0), name)
		}
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	// The manager's metrics server as cmd/manager configures it, serving
	// the registry the controllers of this test process observe into.
	managerURL := startManagerMetrics(t)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // its self-signed certificate
	g.Eventually(func(g Gomega) int {
		status, _ := scrape(g, insecure, managerURL, "")
		return status
	}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Equal(http.StatusUnauthorized), "the manager's metrics without a token")
	var managerFamilies map[string]*dto.MetricFamily
	g.Eventually(func(g Gomega) {
		status, families := scrape(g, insecure, managerURL, tokens["scraper"])
		g.Expect(status).To(Equal(http.StatusOK))
		managerFamilies = families
		g.Expect(sumOf(families["controller_runtime_reconcile_time_seconds"], map[string]string{"controller": "routes"})).To(BeNumerically(">", 0))
		g.Expect(sumOf(families["hookrelay_routes_publish_seconds"], nil)).To(BeNumerically(">", 0))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	exported := map[string]bool{}
	for name := range dispatcherFamilies {
		exported[name] = true
	}
	for name := range managerFamilies {
		exported[name] = true
	}
	g.Expect(unexported(t, exported)).To(BeEmpty(), "metrics the alerts and dashboards query but no binary exports")
}

// unexported lists, by query, the metric names of the alert rules in
// config/prometheus and the panels in config/grafana (none while that
// folder is absent) that are not among the exported families.
func unexported(t *testing.T, exported map[string]bool) map[string][]string {
	t.Helper()
	objects, err := monitoring.Load(filepath.Join(testenv.RepoRoot(), "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	queries := objects.Expressions()
	dashboards, err := monitoring.DashboardExpressions(filepath.Join(testenv.RepoRoot(), "config", "grafana"))
	if err != nil {
		t.Fatal(err)
	}
	for where, expr := range dashboards {
		queries["dashboard "+where] = expr
	}
	if len(objects.Expressions()) == 0 {
		t.Fatal("config/prometheus has no rule expressions")
	}
	missing := map[string][]string{}
	for where, expr := range queries {
		for _, name := range monitoring.MetricNames(expr) {
			if !monitoring.Exported(name, exported) {
				missing[where] = append(missing[where], name)
			}
		}
	}
	for where := range missing {
		slices.Sort(missing[where])
	}
	return missing
}

// serviceAccountTokens creates the ServiceAccounts in namespace and returns
// a token of each, by name.
func serviceAccountTokens(t *testing.T, namespace string, names ...string) map[string]string {
	t.Helper()
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, name := range names {
		if _, err := clientset.CoreV1().ServiceAccounts(namespace).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		request, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = request.Status.Token
	}
	return tokens
}

// bind grants the ServiceAccount the ClusterRole in its namespace (a
// RoleBinding), or clusterWide (a ClusterRoleBinding, deleted when the test
// ends).
func bind(t *testing.T, namespace, serviceAccount, clusterRole string, clusterWide bool) {
	t.Helper()
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: namespace}}
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole}
	name := namespace + "-" + serviceAccount
	if !clusterWide {
		if err := env.Client.Create(t.Context(), &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			RoleRef: roleRef, Subjects: subjects}); err != nil {
			t.Fatal(err)
		}
		return
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, RoleRef: roleRef, Subjects: subjects}
	if err := env.Client.Create(t.Context(), binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Client.Delete(context.Background(), binding); err != nil {
			t.Error(err)
		}
	})
}

// startManagerMetrics runs a manager with no controllers whose metrics
// server is the one cmd/manager runs (controllers.MetricsServerOptions,
// HTTPS with the authentication and authorization filter), on a loopback
// port, and returns its /metrics URL.
func startManagerMetrics(t *testing.T) string {
	t.Helper()
	// controller-runtime does not tell the port it bound: one is picked
	// here, free a moment ago.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	if err := listener.Close(); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: controllers.MetricsServerOptions(address, true, ""), HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return fmt.Sprintf("https://%s/metrics", address)
}
