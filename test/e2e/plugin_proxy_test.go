package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// dispatcherPodIP is the made-up address of the dispatcher Pod; the egress
// proxy connects it to the dispatcher process on 127.0.0.1.
const dispatcherPodIP = "10.244.0.10"

// TestPluginThroughTheServiceProxy: a user bound only to hookrelay-viewer
// lists an endpoint's deliveries through the API server's service proxy
// to the real dispatcher (-o json parses; --kubeconfig, --context and -n
// pick the user and namespace); a user without it gets the API server's
// 403 naming the permission; an unknown endpoint is kubectl's NotFound.
func TestPluginThroughTheServiceProxy(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	_, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", "api_roles.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	// Over TLS, as config/dispatcher serves it: the API server connects to
	// the https port without verifying the certificate.
	certFile, keyFile, ca := servingCertificate(t)
	d := startDispatcherTLS(t, t.TempDir(), ca.pool(), "--insecure-no-auth=false", "--auth-cache-ttl=200ms", "--tls-cert-file="+certFile, "--tls-key-file="+keyFile)
	serveDispatcherService(t, d)
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "palm", r.URL, []string{"*"}, nil)

	clientset, err := kubernetes.NewForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	token := func(name string, roles ...string) string {
		_, err := clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		for _, role := range roles {
			// The role in the team's namespace, and in the dispatcher's for
			// its services/proxy (config/rbac/api_roles.yaml says why).
			for _, in := range []string{namespace, routesNamespace} {
				_, err := clientset.RbacV1().RoleBindings(in).Create(ctx, &rbacv1.RoleBinding{
					ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"},
					RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
					Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}},
				}, metav1.CreateOptions{})
				g.Expect(err).NotTo(HaveOccurred())
			}
		}
		request, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		return request.Status.Token
	}

	// A producer publishes straight to the dispatcher with its token.
	producer := token("producer", "hookrelay-publisher")
	g.Eventually(func() (string, error) {
		return kubectlHookrelay(t, "send", "-n", namespace, "--dispatcher-url", d.URL, "--dispatcher-token", producer, "--dispatcher-ca-file", ca.file,
			"--type", "invoice.paid", "--id", "evt_through_proxy")
	}).WithTimeout(10 * time.Second).Should(Equal("event evt_through_proxy accepted: 1 deliveries\n"))

	// One kubeconfig, two users; the current context is the one with no role.
	kubeconfig := kubeconfigWith(t, "nobody", map[string]string{
		"viewer": token("viewer", "hookrelay-viewer"),
		"nobody": token("nobody"),
	})
	deliveries := []string{"deliveries", "palm", "--kubeconfig", kubeconfig, "-n", namespace}
	g.Eventually(func(g Gomega) {
		out, err := kubectlHookrelay(t, append(deliveries, "--context", "viewer", "-o", "json")...)
		g.Expect(err).NotTo(HaveOccurred(), out)
		var list struct {
			Kind  string `json:"kind"`
			Items []struct {
				Kind     string            `json:"kind"`
				Metadata metav1.ObjectMeta `json:"metadata"`
				EventID  string            `json:"event_id"`
				State    string            `json:"state"`
			} `json:"items"`
		}
		g.Expect(json.Unmarshal([]byte(out), &list)).To(Succeed(), out)
		g.Expect(list.Kind).To(Equal("List"))
		g.Expect(list.Items).To(HaveLen(1))
		g.Expect(list.Items[0].Kind).To(Equal("Delivery"))
		g.Expect(list.Items[0].Metadata.Namespace).To(Equal(namespace))
		g.Expect(list.Items[0].EventID).To(Equal("evt_through_proxy"))
		g.Expect(list.Items[0].State).To(Equal("succeeded"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	out, err := kubectlHookrelay(t, append(deliveries, "--context", "viewer", "-o", "yaml")...)
	g.Expect(err).NotTo(HaveOccurred(), out)
	t.Logf("kubectl hookrelay deliveries palm -o yaml:\n%s", out)
	out, err = kubectlHookrelay(t, append(deliveries, "--context", "viewer", "-o", "name")...)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(MatchRegexp(`^delivery\.hookrelay\.dev/dlv_\w+\n$`))
	out, err = kubectlHookrelay(t, append(deliveries, "--context", "viewer", "-o", "wide")...)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(strings.Fields(strings.SplitN(out, "\n", 2)[0])).To(Equal([]string{"DELIVERY", "EVENT", "STATE", "ATTEMPTS", "CREATED", "UPDATED", "NEXT", "ATTEMPT", "INTERRUPTED"}))
	t.Logf("kubectl hookrelay deliveries palm -o wide:\n%s", out)

	// Without hookrelay-viewer: the API server's 403, as kubectl prints it.
	out, err = kubectlHookrelay(t, "attempts", "evt_through_proxy", "--kubeconfig", kubeconfig, "-n", namespace)
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(Equal(`Error from server (Forbidden): services "https:hookrelay-dispatcher:https" is forbidden: User "system:serviceaccount:` +
		namespace + `:nobody" cannot get resource "services/proxy" in API group "" in the namespace "hookrelay-system"` + "\n"))
	out, err = kubectlHookrelay(t, deliveries...)
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(HavePrefix(`Error from server (Forbidden): webhookendpoints.hookrelay.dev "palm" is forbidden: User "system:serviceaccount:` +
		namespace + `:nobody" cannot get resource "webhookendpoints" in API group "hookrelay.dev"`))
	// With it, the viewer may read but not retry: the proxy refuses the POST.
	out, err = kubectlHookrelay(t, "retry", "dlv_0", "--kubeconfig", kubeconfig, "--context", "viewer", "-n", namespace)
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(ContainSubstring(`cannot create resource "services/proxy"`))
	// -n picks the namespace: the viewer has no role in default.
	out, err = kubectlHookrelay(t, "deliveries", "palm", "--kubeconfig", kubeconfig, "--context", "viewer", "-n", "default")
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(ContainSubstring(`cannot get resource "webhookendpoints" in API group "hookrelay.dev" in the namespace "default"`))

	// An unknown endpoint is an error, worded as kubectl words it.
	out, err = kubectlHookrelay(t, "deliveries", "nope", "--kubeconfig", kubeconfig, "--context", "viewer", "-n", namespace)
	g.Expect(exitCode(err)).To(Equal(1), out)
	_, kubectlSays, kubectlErr := env.Kubectl(ctx, "", "get", "webhookendpoints.hookrelay.dev", "nope", "-n", namespace)
	g.Expect(kubectlErr).To(HaveOccurred())
	g.Expect(out).To(Equal(kubectlSays))
	g.Expect(out).To(Equal(`Error from server (NotFound): webhookendpoints.hookrelay.dev "nope" not found` + "\n"))
}

// TestPluginTimesOutOnASilentDispatcher: a dispatcher that takes the
// connection and never answers fails the command after --request-timeout.
func TestPluginTimesOutOnASilentDispatcher(t *testing.T) {
	g := NewWithT(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	out, err := kubectlHookrelay(t, "attempts", "evt_1", "-n", "default", "--dispatcher-url", "http://"+silent.Addr().String(), "--request-timeout", "1s")
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(HavePrefix("error: the dispatcher did not answer within 1s (--request-timeout)"))
}

// serveDispatcherService makes d, served over TLS, the hookrelay-dispatcher
// Service of hookrelay-system, as config/dispatcher deploys it (port https): a Pod with a made-up
// address, the Service, and the EndpointSlice the service proxy reads.
func serveDispatcherService(t *testing.T, d *dispatcher) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	t.Cleanup(egress.route(dispatcherPodIP+":8443", strings.TrimPrefix(d.URL, "https://")))
	labels := map[string]string{"app.kubernetes.io/name": "hookrelay", "app.kubernetes.io/component": "dispatcher"}
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "hookrelay-dispatcher", Namespace: routesNamespace}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hookrelay-dispatcher-0", Namespace: routesNamespace, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: account.Name, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "dispatcher", Image: "hookrelay"}}},
	}
	service := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hookrelay-dispatcher", Namespace: routesNamespace, Labels: labels},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "hookrelay-dispatcher-e2e", Namespace: routesNamespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: service.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{dispatcherPodIP}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: routesNamespace, Name: pod.Name}}},
		Ports: []discoveryv1.EndpointPort{{Name: new("https"), Port: new(int32(8443))}},
	}
	g.Expect(env.Client.Create(ctx, account)).To(Succeed())
	g.Expect(env.Client.Create(ctx, pod)).To(Succeed())
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: dispatcherPodIP, PodIPs: []corev1.PodIP{{IP: dispatcherPodIP}}}
	g.Expect(env.Client.Status().Update(ctx, pod)).To(Succeed())
	g.Expect(env.Client.Create(ctx, service)).To(Succeed())
	g.Expect(env.Client.Create(ctx, slice)).To(Succeed())
	t.Cleanup(func() {
		for _, err := range []error{
			env.Client.Delete(ctx, slice), env.Client.Delete(ctx, service),
			env.Client.Delete(ctx, pod, &client.DeleteOptions{GracePeriodSeconds: new(int64(0))}), env.Client.Delete(ctx, account),
		} {
			if err != nil {
				t.Errorf("removing the dispatcher Service: %v", err)
			}
		}
	})
}

// kubeconfigWith writes a kubeconfig for the test API server with one
// context per user (named after it, bearer token), current is current.
func kubeconfigWith(t *testing.T, current string, tokens map[string]string) string {
	t.Helper()
	config := clientcmdapi.NewConfig()
	config.Clusters["e2e"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	for user, token := range tokens {
		config.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
		config.Contexts[user] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user, Namespace: "default"}
	}
	config.CurrentContext = current
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*config, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// exitCode is a command's exit status: 0 for no error, -1 when it did not
// exit on its own.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode()
	}
	return -1
}
