package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// dispatcher is a running dispatcher process.
type dispatcher struct {
	cmd     *exec.Cmd
	URL     string
	logPath string
	done    chan struct{}
}

// startDispatcher runs the dispatcher binary against the test API server,
// with its store in dataDir, and waits until it is ready.
func startDispatcher(t *testing.T, dataDir string, args ...string) *dispatcher {
	t.Helper()
	return launchDispatcher(t, dataDir, "http", http.DefaultClient, args...)
}

// startDispatcherTLS runs a dispatcher that serves TLS with a certificate
// that pool trusts.
func startDispatcherTLS(t *testing.T, dataDir string, pool *x509.CertPool, args ...string) *dispatcher {
	t.Helper()
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return launchDispatcher(t, dataDir, "https", httpClient, args...)
}

func launchDispatcher(t *testing.T, dataDir, scheme string, httpClient *http.Client, args ...string) *dispatcher {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "dispatcher.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The dispatcher binds a free port itself and names it in addressFile:
	// a port picked here and closed could be taken before it binds it.
	addressFile := filepath.Join(t.TempDir(), "address")
	cmd := exec.Command(dispatcherBinary, append([]string{
		"--namespace=" + routesNamespace, "--listen-address=127.0.0.1:0", "--listen-address-file=" + addressFile, "--data-dir=" + dataDir,
		"--status-interval=100ms", "--drain-timeout=5s", "--egress-allow-cidr=127.0.0.0/8", "--insecure-no-auth",
	}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, "GORACE=halt_on_error=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &dispatcher{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("dispatcher log:\n%s", d.logTail(60))
		}
	})
	address, err := testenv.WaitForAddressFile(addressFile, d.done, 30*time.Second)
	if err != nil {
		t.Fatalf("the dispatcher: %v\n%s", err, d.logTail(40))
	}
	d.URL = scheme + "://" + address
	NewWithT(t).Eventually(func() (string, error) {
		select {
		case <-d.done:
			t.Fatalf("the dispatcher exited:\n%s", d.logTail(40))
		default:
		}
		response, err := httpClient.Get(d.URL + "/readyz")
		if err != nil {
			return "", err
		}
		defer response.Body.Close()
		body, err := io.ReadAll(response.Body)
		return response.Status + ": " + string(body), err
	}).WithTimeout(30*time.Second).WithPolling(50*time.Millisecond).Should(HavePrefix("200 "), "GET /readyz")
	return d
}

// logTail is the end of the dispatcher's log, for a failure message.
func (d *dispatcher) logTail(lines int) string {
	log, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(log), lines)
}

// stop drains the dispatcher with SIGTERM and checks it exited cleanly.
func (d *dispatcher) stop(t *testing.T) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("the dispatcher did not stop on SIGTERM")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the dispatcher exited with %d", code)
	}
}

// kill stops the dispatcher with SIGKILL, as a crash would.
func (d *dispatcher) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// publish posts a JSON event to a namespace and decodes the answer.
func (d *dispatcher) publish(t *testing.T, namespace string, body string) (int, map[string]any) {
	t.Helper()
	return d.post(t, d.URL+"/v1/namespaces/"+namespace+"/events", "application/json", body)
}

func (d *dispatcher) post(t *testing.T, url, contentType, body string) (int, map[string]any) {
	t.Helper()
	response, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer response.Body.Close()
	var answer map[string]any
	if err := json.NewDecoder(response.Body).Decode(&answer); err != nil {
		t.Fatalf("POST %s: decoding the answer: %v", url, err)
	}
	return response.StatusCode, answer
}

// publishAs posts body as an event to namespace with token as the bearer
// token (none when empty), and returns the status and the answer's body.
func (d *dispatcher) publishAs(g Gomega, namespace, token, body string) (int, string) {
	request, err := http.NewRequest(http.MethodPost, d.URL+"/v1/namespaces/"+namespace+"/events", strings.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	request.Header.Set("Content-Type", "application/json")
	if token != "" {
		request.Header.Set("Authorization", "Bearer "+token)
	}
	response, err := http.DefaultClient.Do(request)
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	answer, err := io.ReadAll(response.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return response.StatusCode, string(answer)
}

// metric reads a metric family from the dispatcher's /metrics (served
// without a token: --insecure-no-auth) and returns the sum of its series,
// "0" when it has none: gauges by namespace drop a namespace with nothing
// left.
func (d *dispatcher) metric(g Gomega, name string) string {
	response, err := http.Get(d.URL + "/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	families, err := parseMetrics(response.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return strconv.FormatFloat(sumOf(families[name], nil), 'g', -1, 64)
}

// parseMetrics reads Prometheus' text format.
func parseMetrics(body io.Reader) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(body)
}

// sumOf adds up the counter, gauge or untyped values (a histogram's count)
// of a family's series whose labels include all of labels.
func sumOf(family *dto.MetricFamily, labels map[string]string) float64 {
	total := 0.0
	for _, metric := range family.GetMetric() {
		matched := 0
		for _, label := range metric.GetLabel() {
			if value, ok := labels[label.GetName()]; ok && value == label.GetValue() {
				matched++
			}
		}
		if matched != len(labels) {
			continue
		}
		switch {
		case metric.Counter != nil:
			total += metric.GetCounter().GetValue()
		case metric.Gauge != nil:
			total += metric.GetGauge().GetValue()
		case metric.Histogram != nil:
			total += float64(metric.GetHistogram().GetSampleCount())
		default:
			total += metric.GetUntyped().GetValue()
		}
	}
	return total
}

// delivery is one request a receiver got.
type delivery struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// EventID is the delivery's Standard Webhooks id: the event id.
func (d delivery) EventID() string { return d.Header.Get("webhook-id") }

// receiver is a real HTTP server on 127.0.0.1 that records deliveries and
// answers as the test says.
type receiver struct {
	*httptest.Server
	mu         sync.Mutex
	deliveries []delivery
	answer     func(n int) (status int, delay time.Duration)
	retryAfter string
}

func newReceiver(t *testing.T, answer func(n int) (int, time.Duration)) *receiver {
	return serveReceiver(t, nil, answer)
}

// serveReceiver starts a receiver on listener (nil: a new one on 127.0.0.1).
func serveReceiver(t *testing.T, listener net.Listener, answer func(n int) (int, time.Duration)) *receiver {
	r := &receiver{answer: answer}
	r.Server = httptest.NewUnstartedServer(r.handler())
	if listener != nil {
		r.Server.Listener.Close()
		r.Server.Listener = listener
	}
	r.Server.Start()
	t.Cleanup(r.Server.Close)
	return r
}

// refusingPort is a loopback port bound but not listening: connections to
// it are refused, and no other socket can take it meanwhile, as one could
// a port that was closed. listen turns it into a receiver.
type refusingPort struct {
	fd  int
	URL string
}

func newRefusingPort(t *testing.T) *refusingPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &refusingPort{fd: fd}
	t.Cleanup(func() {
		if p.fd >= 0 {
			_ = syscall.Close(p.fd)
		}
	})
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	bound, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	p.URL = fmt.Sprintf("http://127.0.0.1:%d", bound.(*syscall.SockaddrInet4).Port)
	return p
}

// listen starts a receiver on the port, from then on accepting connections.
func (p *refusingPort) listen(t *testing.T, answer func(n int) (int, time.Duration)) *receiver {
	t.Helper()
	if err := syscall.Listen(p.fd, syscall.SOMAXCONN); err != nil {
		t.Fatal(err)
	}
	file := os.NewFile(uintptr(p.fd), "receiver")
	p.fd = -1
	// FileListener holds its own copy of the descriptor.
	listener, err := net.FileListener(file)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	return serveReceiver(t, listener, answer)
}

func (r *receiver) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.deliveries = append(r.deliveries, delivery{Header: req.Header.Clone(), Body: body, At: time.Now()})
		n := len(r.deliveries)
		answer, retryAfter := r.answer, r.retryAfter
		r.mu.Unlock()
		status, delay := answer(n)
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-req.Context().Done():
				return
			}
		}
		if retryAfter != "" && status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"received":%d}`, n)
	})
}

func answerWith(status int) func(int) (int, time.Duration) {
	return func(int) (int, time.Duration) { return status, 0 }
}

func (r *receiver) setAnswer(answer func(int) (int, time.Duration)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = answer
}

// setRetryAfter makes 429 answers carry a Retry-After header.
func (r *receiver) setRetryAfter(value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retryAfter = value
}

func (r *receiver) got() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.deliveries...)
}

func (r *receiver) eventIDs() []string {
	var ids []string
	for _, d := range r.got() {
		ids = append(ids, d.EventID())
	}
	return ids
}

// endpoint creates a WebhookEndpoint and one subscription to eventTypes,
// and waits until the dispatcher has its route (its Disabled condition,
// which the dispatcher writes on first sight, is there).
func endpoint(t *testing.T, namespace, name, url string, eventTypes []string, spec func(*hookrelayv1alpha1.WebhookEndpointSpec)) *hookrelayv1alpha1.WebhookEndpoint {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	subscription := &hookrelayv1alpha1.WebhookSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: hookrelayv1alpha1.WebhookSubscriptionSpec{
			EndpointRef: hookrelayv1alpha1.EndpointReference{Name: name}, EventTypes: eventTypes,
		},
	}
	g.Expect(env.Client.Create(ctx, subscription)).To(Succeed())
	endpoint := &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: url},
	}
	if spec != nil {
		spec(&endpoint.Spec)
	}
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(condition(g, endpoint, hookrelayv1alpha1.ConditionReady)).To(Equal(metav1.ConditionTrue))
		g.Expect(condition(g, endpoint, hookrelayv1alpha1.ConditionDisabled)).To(Equal(metav1.ConditionFalse))
		// Ready means the route is out, which can be before the
		// subscription joins it.
		g.Expect(compiledRoute(g, endpoint).Subscriptions).To(HaveLen(1))
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	return endpoint
}

// condition reads a condition's status from the API server.
func condition(g Gomega, endpoint *hookrelayv1alpha1.WebhookEndpoint, conditionType string) metav1.ConditionStatus {
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	c := meta.FindStatusCondition(endpoint.Status.Conditions, conditionType)
	if c == nil {
		return ""
	}
	return c.Status
}

// secretOf reads an endpoint's generated signing secret.
func secretOf(t *testing.T, endpoint *hookrelayv1alpha1.WebhookEndpoint) string {
	t.Helper()
	var secret corev1.Secret
	key := types.NamespacedName{Namespace: endpoint.Namespace, Name: whsec.GeneratedSecretName(endpoint.Name)}
	if err := env.Client.Get(context.Background(), key, &secret); err != nil {
		t.Fatal(err)
	}
	return string(secret.Data["secret"])
}

// verifyPalm checks a Palm-Signature header by the five steps of Palm's
// documentation, written out here independently of the dispatcher's code.
func verifyPalm(header http.Header, secret string, body []byte) error {
	return verifyPrefixed(header, "Palm", secret, body)
}

// verifyPrefixed checks a <prefix>-Signature header by Palm's five steps.
func verifyPrefixed(header http.Header, prefix, secret string, body []byte) error {
	// 1. Extract t and v1.
	var timestamp string
	var signatures []string
	for part := range strings.SplitSeq(header.Get(prefix+"-Signature"), ",") {
		if value, ok := strings.CutPrefix(part, "t="); ok {
			timestamp = value
		} else if value, ok := strings.CutPrefix(part, "v1="); ok {
			signatures = append(signatures, value)
		}
	}
	if timestamp == "" || len(signatures) == 0 {
		return fmt.Errorf("%s-Signature %q lacks t or v1", prefix, header.Get(prefix+"-Signature"))
	}
	// 2. The timestamp is within 5 minutes.
	var seconds int64
	if _, err := fmt.Sscan(timestamp, &seconds); err != nil {
		return err
	}
	if age := time.Since(time.Unix(seconds, 0)); age > 5*time.Minute || age < -5*time.Minute {
		return fmt.Errorf("stale timestamp %s", timestamp)
	}
	// 3. The signed payload is "{timestamp}.{raw_request_body}".
	payload := timestamp + "." + string(body)
	// 4. HMAC-SHA256 with the whsec_ secret.
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(payload))
	expected := mac.Sum(nil)
	// 5. Constant-time comparison with v1.
	for _, signature := range signatures {
		if raw, err := hex.DecodeString(signature); err == nil && hmac.Equal(raw, expected) {
			return nil
		}
	}
	return fmt.Errorf("no v1 signature matches")
}

// verifyStandard checks the Standard Webhooks headers with the reference
// Go library.
func verifyStandard(header http.Header, secret string, body []byte) error {
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	return verifier.Verify(body, header)
}

func tail(text string, lines int) string {
	all := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// jsonBody is a compact JSON string of a value.
func jsonBody(value any) string {
	var buffer bytes.Buffer
	_ = json.NewEncoder(&buffer).Encode(value)
	return buffer.String()
}

func clientKey(obj client.Object) client.ObjectKey { return client.ObjectKeyFromObject(obj) }

// kubectlHookrelay runs `kubectl hookrelay ARGS` as a user would, with the
// test cluster's kubeconfig.
func kubectlHookrelay(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"hookrelay"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
