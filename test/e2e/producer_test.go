package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// tokenAudience is the audience a producer's projected token is issued for,
// and the dispatcher's --token-audience.
const tokenAudience = "hookrelay"

// projectedTokenDir lays out a token as the kubelet projects it: token links
// to ..data/token, and ..data to a folder of the current version, swapped
// for a new one by an atomic rename of a new link.
type projectedTokenDir struct {
	dir     string
	version int
}

func (p *projectedTokenDir) path() string { return filepath.Join(p.dir, "token") }

func (p *projectedTokenDir) write(g Gomega, token string) {
	p.version++
	version := fmt.Sprintf("..2026_11_26_%02d", p.version)
	g.Expect(os.Mkdir(filepath.Join(p.dir, version), 0o755)).To(Succeed())
	g.Expect(os.WriteFile(filepath.Join(p.dir, version, "token"), []byte(token), 0o600)).To(Succeed())
	g.Expect(os.Symlink(version, filepath.Join(p.dir, "..data_tmp"))).To(Succeed())
	g.Expect(os.Rename(filepath.Join(p.dir, "..data_tmp"), filepath.Join(p.dir, "..data"))).To(Succeed())
	if p.version == 1 {
		g.Expect(os.Symlink(filepath.Join("..data", "token"), p.path())).To(Succeed())
	}
}

// TestProducerClientFollowsTokenRotation: a producer set up as in a Pod (a
// ServiceAccount bound to hookrelay-publisher, its token projected with the
// dispatcher's audience into a file) publishes with pkg/client and
// WithTokenFile, JSON events and CloudEvents from several goroutines; mid-way
// the kubelet-like file gets a fresh token by an atomic swap and the old one
// is revoked (its bound Secret deleted, so the API server refuses it). Every
// event is accepted and delivered.
func TestProducerClientFollowsTokenRotation(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	_, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", "api_roles.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	d := startDispatcher(t, t.TempDir(), "--insecure-no-auth=false", "--auth-cache-ttl=200ms", "--token-audience="+tokenAudience)
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "ledger", r.URL, []string{"invoice.*"}, nil)

	// The API's document is served without a token, authentication on.
	response, err := http.Get(d.URL + "/openapi.json")
	g.Expect(err).NotTo(HaveOccurred())
	document, err := io.ReadAll(response.Body)
	response.Body.Close()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	g.Expect(document).To(Equal(dispatcherapi.OpenAPI()))

	clientset := billingPublisher(ctx, g, namespace)

	// Each token is bound to a Secret of its own, as a kubelet's is to its
	// Pod: deleting the Secret revokes the token.
	boundToken := func(name string) string {
		secret, err := clientset.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		request, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "billing", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences:      []string{tokenAudience},
			BoundObjectRef: &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Secret", Name: secret.Name, UID: secret.UID},
		}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		return request.Status.Token
	}
	tokens := &projectedTokenDir{dir: t.TempDir()}
	firstToken := boundToken("first-token")
	tokens.write(g, firstToken)

	producer, err := client.New(d.URL, client.WithTokenFile(tokens.path()))
	g.Expect(err).NotTo(HaveOccurred())
	const events, workers = 40, 4
	var (
		mu       sync.Mutex
		answered = map[string]bool{} // event ids the dispatcher answered with
	)
	// publishAll publishes events from..to-1 from workers goroutines, odd
	// ones as CloudEvents, and fails on the first one refused.
	publishAll := func(from, to int) {
		indexes := make(chan int)
		var wg sync.WaitGroup
		errs := make(chan error, to-from)
		for range workers {
			wg.Go(func() {
				for i := range indexes {
					answer, err := publishOne(ctx, producer, namespace, i)
					if err != nil {
						errs <- fmt.Errorf("event %d: %w", i, err)
						continue
					}
					mu.Lock()
					answered[answer.ID] = true
					mu.Unlock()
				}
			})
		}
		for i := from; i < to; i++ {
			indexes <- i
		}
		close(indexes)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		g.Expect(t.Failed()).To(BeFalse())
	}

	publishAll(0, events/2)

	tokens.write(g, boundToken("second-token"))
	g.Expect(clientset.CoreV1().Secrets(namespace).Delete(ctx, "first-token", metav1.DeleteOptions{})).To(Succeed())
	// The dispatcher refuses the old token once the API server's cache of
	// token authentications (10s) and the dispatcher's (--auth-cache-ttl)
	// have let go of it.
	oldTokenPublishes := func() string {
		old, err := client.New(d.URL, client.WithToken(firstToken), client.WithMaxTries(1))
		g.Expect(err).NotTo(HaveOccurred())
		// A type the endpoint does not take, so that the probes accepted
		// before the revocation are not delivered.
		_, err = old.Publish(ctx, namespace, dispatcherapi.PublishRequest{Type: "audit.probe"})
		return fmt.Sprint(err)
	}
	g.Eventually(oldTokenPublishes).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(ContainSubstring("HTTP 401"))

	publishAll(events/2, events)

	g.Expect(answered).To(HaveLen(events))
	g.Eventually(func() map[string]bool {
		got := map[string]bool{}
		for _, id := range r.eventIDs() {
			got[id] = true
		}
		return got
	}).WithTimeout(20 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(answered))
}

// publishOne publishes event i: a JSON event when i is even, a CloudEvent
// made with the SDK when odd.
func publishOne(ctx context.Context, producer *client.Client, namespace string, i int) (dispatcherapi.PublishResponse, error) {
	data := json.RawMessage(fmt.Sprintf(`{"invoice":%d}`, i))
	if i%2 == 0 {
		return producer.Publish(ctx, namespace, dispatcherapi.PublishRequest{ID: fmt.Sprintf("inv-%d", i), Type: "invoice.paid", Data: data})
	}
	event := cloudevents.NewEvent()
	event.SetID(fmt.Sprintf("inv-%d", i))
	event.SetSource("billing/invoices")
	event.SetType("invoice.paid")
	if err := event.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return dispatcherapi.PublishResponse{}, err
	}
	return producer.PublishCloudEvent(ctx, namespace, event)
}

// billingPublisher creates the ServiceAccount billing in namespace, bound to
// hookrelay-publisher there, as a producer's Pod would run as.
func billingPublisher(ctx context.Context, g Gomega, namespace string) *kubernetes.Clientset {
	clientset, err := kubernetes.NewForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "billing"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = clientset.RbacV1().RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "billing-publishes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "hookrelay-publisher"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "billing", Namespace: namespace}},
	}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	return clientset
}

// TestTokensForEitherAudience: a dispatcher with two audiences in
// --token-audience accepts a producer's token for its own audience and a
// user's token for the API server's (what the kubectl plugin forwards
// through the API server's proxy), and refuses one for neither.
func TestTokensForEitherAudience(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	_, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", "api_roles.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	clientset := billingPublisher(ctx, g, namespace)
	tokenFor := func(audiences ...string) string {
		request, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "billing",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		return request.Status.Token
	}
	// A token requested without audiences is for the API server's; a review
	// without audiences says which those are.
	apiServerToken := tokenFor()
	review, err := clientset.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: apiServerToken}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(review.Status.Audiences).NotTo(BeEmpty())

	d := startDispatcher(t, t.TempDir(), "--insecure-no-auth=false", "--token-audience="+tokenAudience+","+review.Status.Audiences[0])
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "ledger", r.URL, []string{"invoice.*"}, nil)
	for i, token := range []string{tokenFor(tokenAudience), apiServerToken} {
		producer, err := client.New(d.URL, client.WithToken(token))
		g.Expect(err).NotTo(HaveOccurred())
		_, err = producer.Publish(ctx, namespace, dispatcherapi.PublishRequest{ID: fmt.Sprintf("evt_audience_%d", i), Type: "invoice.paid", Data: json.RawMessage(`{}`)})
		g.Expect(err).NotTo(HaveOccurred(), "token %d", i)
	}
	producer, err := client.New(d.URL, client.WithToken(tokenFor("elsewhere")))
	g.Expect(err).NotTo(HaveOccurred())
	_, err = producer.Publish(ctx, namespace, dispatcherapi.PublishRequest{ID: "evt_audience_other", Type: "invoice.paid", Data: json.RawMessage(`{}`)})
	var refused *client.APIError
	g.Expect(errors.As(err, &refused)).To(BeTrue(), "%v", err)
	g.Expect(refused.StatusCode).To(Equal(http.StatusUnauthorized))
}
