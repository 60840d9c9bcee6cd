package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestPublishersNeedATokenAndTheRBACGrant: 401 without a token, 403 with a
// ServiceAccount token before the RoleBinding, 202 after binding
// hookrelay-publisher, and 403 in another namespace.
func TestPublishersNeedATokenAndTheRBACGrant(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace, other := env.Namespace(t), env.Namespace(t)
	_, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", "api_roles.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	d := startDispatcher(t, t.TempDir(), "--insecure-no-auth=false", "--auth-cache-ttl=200ms")
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "secured", r.URL, []string{"*"}, nil)
	endpoint(t, other, "elsewhere", r.URL, []string{"*"}, nil)

	clientset, err := kubernetes.NewForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "billing"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	tokenRequest, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "billing", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	token := tokenRequest.Status.Token

	publish := func(namespace, token string) (int, string) {
		return d.publishAs(g, namespace, token, `{"type":"invoice.paid","data":{}}`)
	}

	for _, refused := range []struct {
		token  string
		status int
		says   string
	}{
		{"", http.StatusUnauthorized, "a Kubernetes bearer token is required"},
		{"not-a-token", http.StatusUnauthorized, "the token was refused"},
		{token, http.StatusForbidden, `system:serviceaccount:` + namespace + `:billing may not create events.hookrelay.dev in namespace \"` + namespace + `\"`},
	} {
		status, body := publish(namespace, refused.token)
		g.Expect(status).To(Equal(refused.status), body)
		g.Expect(body).To(ContainSubstring(refused.says))
	}

	_, err = clientset.RbacV1().RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "billing-publishes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "hookrelay-publisher"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "billing", Namespace: namespace}},
	}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	// The answer with its body, which says why while it is refused.
	g.Eventually(func() string { status, body := publish(namespace, token); return fmt.Sprint(status, " ", body) }).
		WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).Should(HavePrefix(fmt.Sprint(http.StatusAccepted, " ")))
	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(Not(BeEmpty()))

	status, body := publish(other, token)
	g.Expect(status).To(Equal(http.StatusForbidden), body)

	// Reading the delivery log needs its own grant.
	request, err := http.NewRequest(http.MethodGet, d.URL+"/v1/namespaces/"+namespace+"/endpoints/secured/deliveries", nil)
	g.Expect(err).NotTo(HaveOccurred())
	request.Header.Set("Authorization", "Bearer "+token)
	response, err := http.DefaultClient.Do(request)
	g.Expect(err).NotTo(HaveOccurred())
	response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusForbidden))
}
