package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// openRaw opens a TCP connection to the dispatcher and writes what a slow
// client would have sent so far.
func openRaw(t *testing.T, d *dispatcher, sent string) net.Conn {
	t.Helper()
	address, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", address.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, sent); err != nil {
		t.Fatal(err)
	}
	return conn
}

// closedByServer reads until the dispatcher closes the connection. The
// read deadline only bounds a failing test: it is far past the timeouts.
func closedByServer(conn net.Conn) error {
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("the dispatcher kept the connection open: %w", err)
	}
	return nil
}

// TestSlowClientsAreDisconnected: a client trickling its headers, one
// trickling its body, and one idling on keep-alive are each closed by the
// dispatcher (authentication is off, so the body is read: with it on, a
// request without a valid token is answered before its body).
func TestSlowClientsAreDisconnected(t *testing.T) {
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir(), "--read-header-timeout=1s", "--read-timeout=2s", "--write-timeout=2s", "--idle-timeout=2s")
	path := "/v1/namespaces/" + namespace + "/events"
	clients := map[string]net.Conn{
		"headers trickled": openRaw(t, d, "POST "+path+" HTTP/1.1\r\nHost: hookrelay\r\nContent-Type: appl"),
		"body trickled": openRaw(t, d, "POST "+path+" HTTP/1.1\r\nHost: hookrelay\r\n"+
			"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":"),
		"answered, then idle": openRaw(t, d, "POST "+path+" HTTP/1.1\r\nHost: hookrelay\r\nContent-Type: application/json\r\n"+
			"Content-Length: 2\r\n\r\n{}"),
	}
	for name, conn := range clients {
		if err := closedByServer(conn); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestDrainIsNotHeldUpByASlowClient: SIGTERM while a batch of deliveries is
// in flight to a slow receiver and a client holds a request open. The
// attempts in flight finish and are recorded, no new one starts, and after a
// restart each event arrives exactly once. Had the server's shutdown, held
// up by the client until the drain deadline, come first, the engine would
// have started the second batch meanwhile and exited with it in flight.
func TestDrainIsNotHeldUpByASlowClient(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	dataDir := t.TempDir()
	const drain = 10 * time.Second
	// Read and write deadlines past the drain, so the server cannot close
	// the slow client before its shutdown gives up on it.
	d := startDispatcher(t, dataDir, "--drain-timeout="+drain.String(), "--read-timeout=1m", "--write-timeout=1m")
	// Each attempt ends within the drain, but two in a row do not.
	r := newReceiver(t, func(int) (int, time.Duration) { return http.StatusOK, drain * 7 / 10 })
	const maxInFlight = 10
	endpoint(t, namespace, "slow", r.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.MaxInFlight = ptr.To[int32](maxInFlight)
		spec.Timeout = &metav1.Duration{Duration: 30 * time.Second}
	})
	// A request whose body never comes.
	openRaw(t, d, "POST /v1/namespaces/"+namespace+"/events HTTP/1.1\r\nHost: hookrelay\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")

	const events = 2 * maxInFlight
	for i := range events {
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_drain_%02d","type":"order.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
	}
	// The first batch is in flight; the second waits for it.
	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(HaveLen(maxInFlight))
	d.stop(t)

	restarted := startDispatcher(t, dataDir)
	// Once the log shows every delivery succeeded, every attempt has reached
	// the receiver: an attempt abandoned at the drain would have been made
	// again after the restart, before its success was recorded.
	g.Eventually(func(g Gomega) {
		response, err := http.Get(restarted.URL + "/v1/namespaces/" + namespace + "/endpoints/slow/deliveries?state=succeeded&limit=100")
		g.Expect(err).NotTo(HaveOccurred())
		defer response.Body.Close()
		var page struct {
			Deliveries []json.RawMessage `json:"deliveries"`
		}
		g.Expect(json.NewDecoder(response.Body).Decode(&page)).To(Succeed())
		g.Expect(page.Deliveries).To(HaveLen(events))
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	arrivals := map[string]int{}
	for _, id := range r.eventIDs() {
		arrivals[id]++
	}
	repeated := map[string]int{}
	for id, n := range arrivals {
		if n > 1 {
			repeated[id] = n
		}
	}
	g.Expect(repeated).To(BeEmpty(), "events delivered more than once (id: arrivals)")
	g.Expect(arrivals).To(HaveLen(events))
}

// TestCorruptStoreFileStopsTheDispatcher: a damaged store file makes the
// dispatcher exit with a message naming it, not a bbolt panic.
func TestCorruptStoreFileStopsTheDispatcher(t *testing.T) {
	g := NewWithT(t)
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, "hookrelay.db")
	db, err := store.OpenBolt(path)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(db.Close()).To(Succeed())
	data, err := os.ReadFile(path)
	g.Expect(err).NotTo(HaveOccurred())
	for i := 2 * os.Getpagesize(); i < len(data); i++ {
		data[i] = byte(i*7 + 13)
	}
	g.Expect(os.WriteFile(path, data, 0o600)).To(Succeed())

	cmd := exec.Command(dispatcherBinary, "--data-dir="+dataDir, "--listen-address=127.0.0.1:0", "--insecure-no-auth")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	out, err := cmd.CombinedOutput()
	g.Expect(err).To(HaveOccurred(), string(out))
	g.Expect(string(out)).To(ContainSubstring("store file is corrupt: " + path))
	g.Expect(string(out)).NotTo(ContainSubstring("panic"))
}

// TestUnsafeFlagsWarnAndProfilesStayOnLoopback: --insecure-no-auth and
// --enable-profiling log a WARNING; profiles are served on their own
// loopback listener, not the API's, and a non-loopback address is refused.
func TestUnsafeFlagsWarnAndProfilesStayOnLoopback(t *testing.T) {
	g := NewWithT(t)
	// The warning names the port the profiling listener bound.
	d := startDispatcher(t, t.TempDir(), "--enable-profiling", "--profiling-address=127.0.0.1:0")
	served := regexp.MustCompile(`profiles are served on (127\.0\.0\.1:\d+);`)
	var profiling string
	g.Eventually(func(g Gomega) string {
		log, err := os.ReadFile(d.logPath)
		g.Expect(err).NotTo(HaveOccurred())
		if match := served.FindStringSubmatch(string(log)); match != nil {
			profiling = match[1]
		}
		return string(log)
	}).WithTimeout(10 * time.Second).Should(And(
		ContainSubstring("WARNING: --insecure-no-auth is set"), ContainSubstring("WARNING: --enable-profiling is set"), MatchRegexp(served.String())))
	response, err := http.Get(d.URL + "/debug/pprof/")
	g.Expect(err).NotTo(HaveOccurred())
	response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusNotFound), "profiles on the API's listener")
	response, err = http.Get("http://" + profiling + "/debug/pprof/")
	g.Expect(err).NotTo(HaveOccurred())
	response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))

	cmd := exec.Command(dispatcherBinary, "--data-dir="+t.TempDir(), "--listen-address=127.0.0.1:0", "--enable-profiling", "--profiling-address=0.0.0.0:6060")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	out, err := cmd.CombinedOutput()
	g.Expect(err).To(HaveOccurred(), string(out))
	g.Expect(string(out)).To(ContainSubstring(`--profiling-address: "0.0.0.0:6060" is not a loopback address`))
}
