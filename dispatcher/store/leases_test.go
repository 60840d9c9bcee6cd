package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/pgtest"
)

// owned is a lease handler that keeps what it was given.
type owned struct {
	mu         sync.Mutex
	partitions map[int]bool
	woken      []store.Delivery
	lost       int
}

func (o *owned) Acquire(_ context.Context, partitions []int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, partition := range partitions {
		if o.partitions[partition] {
			return fmt.Errorf("partition %d acquired twice", partition)
		}
		o.partitions[partition] = true
	}
	return nil
}

func (o *owned) Release(partitions []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, partition := range partitions {
		delete(o.partitions, partition)
	}
}

func (o *owned) Lose() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partitions = map[int]bool{}
	o.lost++
}

func (o *owned) Wake(deliveries []store.Delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.woken = append(o.woken, deliveries...)
}

func (o *owned) list() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int
	for partition := range o.partitions {
		out = append(out, partition)
	}
	slices.Sort(out)
	return out
}

func (o *owned) wokenIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, delivery := range o.woken {
		out = append(out, delivery.ID)
	}
	return out
}

// replica runs a lease holder on the database until the returned stop.
func replica(t *testing.T, db *store.Postgres, name string) (*owned, *store.Leases, context.CancelFunc) {
	t.Helper()
	handler := &owned{partitions: map[int]bool{}}
	leases, err := db.Leases(store.LeaseOptions{Replica: name, Interval: 100 * time.Millisecond, Handler: handler, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { leases.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return handler, leases, stop
}

// TestLeasesShareThePartitions: replicas on one database split the
// partitions between them, each to one replica; when one stops, the others
// take its partitions; wake-ups reach every replica.
func TestLeasesShareThePartitions(t *testing.T) {
	g := NewWithT(t)
	db, err := store.OpenPostgres(t.Context(), pgtest.Database(t))
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(db.Close()).To(Succeed()) }()

	a, aLeases, stopA := replica(t, db, "a")
	g.Eventually(a.list).WithTimeout(10 * time.Second).Should(HaveLen(store.Partitions))
	g.Expect(aLeases.Connected()).To(BeTrue())
	b, _, _ := replica(t, db, "b")
	c, _, _ := replica(t, db, "c")
	split := func() bool {
		all := slices.Concat(a.list(), b.list(), c.list())
		slices.Sort(all)
		return len(a.list()) > 0 && len(b.list()) > 0 && len(c.list()) > 0 && slices.Equal(all, store.AllPartitions())
	}
	g.Eventually(split).WithTimeout(10*time.Second).Should(BeTrue(), func() string {
		return fmt.Sprintf("a %v, b %v, c %v", a.list(), b.list(), c.list())
	})
	want := [3][store.Partitions]bool{store.Assign([]string{"hookrelay/a", "hookrelay/b", "hookrelay/c"}, "hookrelay/a")}
	for partition, mine := range want[0] {
		g.Expect(slices.Contains(a.list(), partition)).To(Equal(mine), "partition %d", partition)
	}

	fresh := store.Delivery{ID: "dlv_1", Namespace: "shop", Endpoint: "orders", State: store.Pending}
	g.Expect(aLeases.Wake(t.Context(), []store.Delivery{fresh})).To(Succeed())
	for _, r := range []*owned{a, b, c} {
		g.Eventually(r.wokenIDs).WithTimeout(10 * time.Second).Should(Equal([]string{"dlv_1"}))
	}

	stopA()
	g.Expect(aLeases.Connected()).To(BeFalse())
	g.Expect(a.lost).To(Equal(1), "a stopped replica gives up what it holds")
	g.Eventually(func() int { return len(b.list()) + len(c.list()) }).WithTimeout(10 * time.Second).Should(Equal(store.Partitions))
}

// TestAssignMovesOnlyTheLeaversShare: with rendezvous hashing, a replica
// leaving moves only the partitions it had.
func TestAssignMovesOnlyTheLeaversShare(t *testing.T) {
	three := []string{"a", "b", "c"}
	before := map[string][store.Partitions]bool{}
	for _, r := range three {
		before[r] = store.Assign(three, r)
	}
	after := store.Assign([]string{"a", "b"}, "a")
	for partition := range store.Partitions {
		if before["a"][partition] && !after[partition] {
			t.Errorf("partition %d left a when c left", partition)
		}
		if before["b"][partition] && after[partition] {
			t.Errorf("partition %d moved from b to a when c left", partition)
		}
	}
}
