package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	. "github.com/onsi/gomega"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/pgtest"
)

// replica is one dispatcher process of a replica set, which the test can
// kill, stop and start again on the same database.
type replica struct {
	name    string
	dataDir string
	dsnFile string
	// proxy, when set, is the replica's only way to PostgreSQL.
	proxy *pgProxy

	mu sync.Mutex
	// running is nil while the replica is down.
	running *dispatcher
}

// replicaSet is N dispatchers with --store=postgres on one database.
type replicaSet []*replica

// replicaCount is how many replicas the tests run, as config/postgres does.
const replicaCount = 3

// startReplicas starts replicaCount replicas on a new database. With
// proxied, each reaches PostgreSQL through a TCP proxy of its own that the
// test can cut.
func startReplicas(t *testing.T, proxied bool) replicaSet {
	t.Helper()
	dsn := pgtest.Database(t)
	replicas := make(replicaSet, replicaCount)
	for i := range replicas {
		r := &replica{name: fmt.Sprintf("replica-%d", i), dataDir: t.TempDir(), dsnFile: filepath.Join(t.TempDir(), "dsn")}
		replicaDSN := dsn
		if proxied {
			r.proxy = newPGProxy(t, dsn)
			replicaDSN = r.proxy.dsn
		}
		if err := os.WriteFile(r.dsnFile, []byte(replicaDSN), 0o600); err != nil {
			t.Fatal(err)
		}
		replicas[i] = r
		r.start(t)
	}
	replicas.settle(t)
	return replicas
}

// start runs the replica's dispatcher and waits until it is ready.
func (r *replica) start(t *testing.T) {
	t.Helper()
	d := startDispatcher(t, r.dataDir, "--store=postgres", "--postgres-dsn-file="+r.dsnFile, "--replica-name="+r.name)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = d
}

// dispatcher is the running process, nil while the replica is down.
func (r *replica) dispatcher() *dispatcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// down marks the replica down.
func (r *replica) down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = nil
}

// kill stops the replica with SIGKILL, as a node's crash would.
func (r *replica) kill() {
	r.dispatcher().kill()
	r.down()
}

// stop drains the replica with SIGTERM and waits for it to exit cleanly;
// meanwhile publishers still reach it, as they would a terminating pod.
func (r *replica) stop(t *testing.T) {
	r.dispatcher().stop(t)
	r.down()
}

// replicaClient publishes for the tests; its timeout bounds a publish to a
// replica that hangs, which the publisher then counts as failed.
var replicaClient = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 16},
}

// publishResult is the answer to one publish, or why there was none.
type publishResult struct {
	status     int
	retryAfter string
	err        error
}

func (p publishResult) accepted() bool {
	// 200 is a duplicate: the event was accepted before.
	return p.err == nil && (p.status == http.StatusAccepted || p.status == http.StatusOK)
}

func (p publishResult) String() string {
	if p.err != nil {
		return p.err.Error()
	}
	return fmt.Sprintf("HTTP %d (Retry-After %q)", p.status, p.retryAfter)
}

// publish posts an event to the replica; a down replica or a failed
// request is a result, not a test failure, since the tests cause both.
func (r *replica) publish(namespace, body string) publishResult {
	d := r.dispatcher()
	if d == nil {
		return publishResult{err: errors.New("down")}
	}
	response, err := replicaClient.Post(d.URL+"/v1/namespaces/"+namespace+"/events", "application/json", strings.NewReader(body))
	if err != nil {
		return publishResult{err: err}
	}
	defer response.Body.Close()
	// Read to the end, so that the connection is reused.
	if _, err := io.Copy(io.Discard, response.Body); err != nil {
		return publishResult{err: fmt.Errorf("reading the answer: %w", err)}
	}
	return publishResult{status: response.StatusCode, retryAfter: response.Header.Get("Retry-After")}
}

// readyz is the replica's GET /readyz status code.
func (r *replica) readyz(g Gomega) int {
	d := r.dispatcher()
	g.Expect(d).NotTo(BeNil(), r.name+" is down")
	response, err := replicaClient.Get(d.URL + "/readyz")
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	_, err = io.Copy(io.Discard, response.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return response.StatusCode
}

// publishOnce publishes event n to replica n mod len, and when retry is set
// and that publish is refused or fails, once more to the next replica with
// the same id, as a producer behind a load balancer would. It returns the
// refusals, and an error when the event was not accepted in the end.
func (rs replicaSet) publishOnce(namespace string, n int, body string, retry bool) (refusals []error, err error) {
	tries := 1
	if retry {
		tries = 2
	}
	for try := range tries {
		r := rs[(n+try)%len(rs)]
		result := r.publish(namespace, body)
		if result.accepted() {
			return refusals, nil
		}
		refusals = append(refusals, fmt.Errorf("%s: %s", r.name, result))
	}
	return refusals, errors.Join(refusals...)
}

// publishAll publishes events [0, total) with workers concurrent
// publishers, event n to replica n mod len (see publishOnce), and returns
// the ids of those accepted and the errors of the others.
func (rs replicaSet) publishAll(namespace string, total, workers int, retry bool, event func(n int) (id, body string)) (accepted []string, failed []error) {
	var mu sync.Mutex
	var publishers sync.WaitGroup
	for worker := range workers {
		publishers.Go(func() {
			for n := worker; n < total; n += workers {
				id, body := event(n)
				_, err := rs.publishOnce(namespace, n, body, retry)
				mu.Lock()
				if err == nil {
					accepted = append(accepted, id)
				} else {
					failed = append(failed, fmt.Errorf("%s: %w", id, err))
				}
				mu.Unlock()
			}
		})
	}
	publishers.Wait()
	return accepted, failed
}

// owner is the replica that owns the endpoint's partition, once exactly one
// of the running replicas reports it on /metrics.
func (rs replicaSet) owner(t *testing.T, namespace, endpoint string) *replica {
	t.Helper()
	partition := store.Partition(namespace, endpoint)
	var owner *replica
	NewWithT(t).Eventually(func(g Gomega) {
		owners := rs.ownersOf(g, partition)
		g.Expect(owners).To(HaveLen(1), "replicas owning partition %d", partition)
		owner = rs[slices.Index(rs.names(), owners[0])]
	}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the owner of %s/%s", namespace, endpoint)
	return owner
}

// ownersOf names the running replicas that report owning a partition.
func (rs replicaSet) ownersOf(g Gomega, partition int) []string {
	var owners []string
	for _, r := range rs {
		if d := r.dispatcher(); d != nil && ownedPartitions(g, d)[partition] {
			owners = append(owners, r.name)
		}
	}
	return owners
}

// ownedPartitions reads the partitions a dispatcher reports owning, from
// its hookrelay_partition_owned series on /metrics.
func ownedPartitions(g Gomega, d *dispatcher) map[int]bool {
	response, err := replicaClient.Get(d.URL + "/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	text, err := io.ReadAll(response.Body)
	g.Expect(err).NotTo(HaveOccurred())
	owned := map[int]bool{}
	for line := range strings.SplitSeq(string(text), "\n") {
		var partition int
		var value float64
		if _, err := fmt.Sscanf(line, `hookrelay_partition_owned{partition="%d"} %g`, &partition, &value); err == nil && value == 1 {
			owned[partition] = true
		}
	}
	return owned
}

// settle waits until every running replica owns exactly the partitions
// that rendezvous hashing assigns it among them, so that an owner a test
// finds is not one about to hand its partition over.
func (rs replicaSet) settle(t *testing.T) {
	t.Helper()
	var live []string
	for _, r := range rs {
		if r.dispatcher() != nil {
			// The name the replica's lease session carries.
			live = append(live, "hookrelay/"+r.name)
		}
	}
	NewWithT(t).Eventually(func(g Gomega) {
		for _, r := range rs {
			d := r.dispatcher()
			if d == nil {
				continue
			}
			assigned := store.Assign(live, "hookrelay/"+r.name)
			want := map[int]bool{}
			for partition, mine := range assigned {
				if mine {
					want[partition] = true
				}
			}
			g.Expect(ownedPartitions(g, d)).To(Equal(want), "the partitions of %s", r.name)
		}
	}).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "the replicas share the partitions out")
}

func (rs replicaSet) names() []string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.name
	}
	return names
}

// others is every replica but r.
func (rs replicaSet) others(r *replica) replicaSet {
	return slices.DeleteFunc(slices.Clone(rs), func(other *replica) bool { return other == r })
}

// tally counts a receiver's deliveries by event id.
func tally(r *receiver) map[string]int {
	counts := map[string]int{}
	for _, d := range r.got() {
		counts[d.EventID()]++
	}
	return counts
}

// duplicates is how many deliveries a receiver got beyond the first of
// each event.
func duplicates(r *receiver) int {
	extra := 0
	for _, n := range tally(r) {
		extra += n - 1
	}
	return extra
}

// undelivered describes the ids the receiver has not got yet ("" when it
// has all), naming a few for the failure message.
func undelivered(r *receiver, ids []string) string {
	counts := tally(r)
	var missing []string
	for _, id := range ids {
		if counts[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d not delivered, such as %v", len(missing), len(ids), missing[:min(len(missing), 5)])
}

// pgProxy forwards TCP connections on a loopback port to the test
// cluster's Unix socket: a replica whose DSN names the proxy loses its
// database when the test cuts the proxy (the listener and every forwarded
// connection closed), and gets it back when the test restores it.
type pgProxy struct {
	// dsn reaches the database through the proxy.
	dsn     string
	socket  string
	address string
	log     func(format string, args ...any)

	mu sync.Mutex
	// listener is nil while the proxy is cut.
	listener net.Listener
	conns    map[net.Conn]struct{}
	// forwarding counts the accept loop and the forwarded connections.
	forwarding sync.WaitGroup
}

func newPGProxy(t *testing.T, dsn string) *pgProxy {
	t.Helper()
	config, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	// pgtest's cluster listens only on a socket in its folder, named after
	// the port as libpq names it.
	p := &pgProxy{socket: filepath.Join(config.Host, fmt.Sprintf(".s.PGSQL.%d", config.Port)), log: t.Logf, conns: map[net.Conn]struct{}{}}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.address = listener.Addr().String()
	host, port, err := net.SplitHostPort(p.address)
	if err != nil {
		t.Fatal(err)
	}
	p.dsn = fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, config.User, config.Database)
	p.serve(listener)
	t.Cleanup(p.cut)
	return p
}

func (p *pgProxy) serve(listener net.Listener) {
	p.mu.Lock()
	p.listener = listener
	p.mu.Unlock()
	p.forwarding.Go(func() {
		for {
			client, err := listener.Accept()
			if err != nil {
				// cut closed the listener.
				return
			}
			p.forwarding.Go(func() { p.forward(client) })
		}
	})
}

// forward copies both ways between a client and a new connection to the
// server until either side ends, then closes both.
func (p *pgProxy) forward(client net.Conn) {
	server, err := net.Dial("unix", p.socket)
	if err != nil {
		p.log("pgproxy %s: %v", p.address, err)
		client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	defer p.untrack(client, server)
	ended := make(chan struct{}, 2)
	copyTo := func(to, from net.Conn) {
		// The copy's error is the other side closing, or cut: either way
		// the connection is over, which closing both sides says to both.
		_, _ = io.Copy(to, from)
		ended <- struct{}{}
	}
	go copyTo(server, client)
	go copyTo(client, server)
	<-ended
	client.Close()
	server.Close()
	<-ended
}

// track registers a forwarded pair, or closes it if the proxy was cut
// meanwhile.
func (p *pgProxy) track(client, server net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listener == nil {
		client.Close()
		server.Close()
		return false
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	return true
}

func (p *pgProxy) untrack(client, server net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, client)
	delete(p.conns, server)
}

// cut closes the listener and every forwarded connection, and waits until
// nothing is forwarded any more: the replica's connections fail at once,
// and new ones are refused.
func (p *pgProxy) cut() {
	p.mu.Lock()
	listener := p.listener
	p.listener = nil
	for conn := range p.conns {
		conn.Close()
	}
	p.mu.Unlock()
	if listener != nil {
		listener.Close()
	}
	p.forwarding.Wait()
}

// restore listens again on the same port.
func (p *pgProxy) restore(t *testing.T) {
	t.Helper()
	listener, err := net.Listen("tcp", p.address)
	if err != nil {
		t.Fatalf("listening again on %s: %v", p.address, err)
	}
	p.serve(listener)
}
