package delivery

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// TestFIFOKeepsOrder: pushes and pops in any interleaving come out in
// order, as from a plain slice, through the fifo's reuse and compaction of
// its array.
func TestFIFOKeepsOrder(t *testing.T) {
	random := rand.New(rand.NewPCG(1, 2))
	var f fifo
	var model []string
	next := 0
	for step := range 20_000 {
		if len(model) > 0 && random.IntN(100) < 48 {
			got, want := f.pop().delivery.ID, model[0]
			model = model[1:]
			if got != want {
				t.Fatalf("step %d: popped %s, want %s", step, got, want)
			}
		} else {
			id := strconv.Itoa(next)
			next++
			f.push(task{delivery: store.Delivery{ID: id}})
			model = append(model, id)
		}
		if f.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, f.len(), len(model))
		}
	}
	drained := f.drain()
	if len(drained) != len(model) || f.len() != 0 {
		t.Fatalf("drained %d tasks, %d left; want %d, 0", len(drained), f.len(), len(model))
	}
	for i, task := range drained {
		if task.delivery.ID != model[i] {
			t.Fatalf("drained %s at %d, want %s", task.delivery.ID, i, model[i])
		}
	}
}
