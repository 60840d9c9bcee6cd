package main

import (
	"testing"

	"github.com/google/pprof/profile"
)

// sample is a CPU sample of value on the stack of functions, innermost
// first.
func sample(value int64, functions ...string) *profile.Sample {
	s := &profile.Sample{Value: []int64{1, value}}
	for _, name := range functions {
		s.Location = append(s.Location, &profile.Location{Line: []profile.Line{{Function: &profile.Function{Name: name}}}})
	}
	return s
}

// TestGroups: each sample counts once, for the innermost frame that names a
// group; flat time goes to the innermost function, cumulative time once to
// each function on the stack.
func TestGroups(t *testing.T) {
	cpu := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			sample(10, "crypto/sha256.block", "crypto/hmac.(*hmac).Write", "github.com/hookrelay/hookrelay/dispatcher/signing.Signer.Sign",
				"github.com/hookrelay/hookrelay/dispatcher/delivery.(*Attempter).post"),
			sample(20, "runtime.mallocgc", "encoding/json.Marshal", "github.com/hookrelay/hookrelay/dispatcher/store.put"),
			sample(30, "encoding/json.appendCompact", "encoding/json.Marshal", "github.com/hookrelay/hookrelay/dispatcher/store.put"),
			sample(40, "internal/runtime/syscall/linux.Syscall6", "go.etcd.io/bbolt.(*DB).Update", "go.etcd.io/bbolt.(*DB).Update"),
			sample(50, "runtime.findRunnable", "runtime.schedule"),
			sample(60, "net/http.(*persistConn).readLoop"),
			sample(70, "github.com/hookrelay/hookrelay/dispatcher/ingest.(*Handler).publish", "net/http.(*conn).serve"),
			sample(80, "github.com/hookrelay/hookrelay/dispatcher/delivery.(*Engine).attempt"),
		},
	}
	b := breakDown(cpu, "cpu", true)
	want := map[string]int64{"signing": 10, allocGroup: 20, "JSON": 30, "store": 40, otherGroup: 50, "HTTP out/attempt": 60, "HTTP in": 70, "engine": 80}
	for name, value := range want {
		if b.byGroup[name] != value {
			t.Errorf("group %s: %d, want %d (all: %v)", name, b.byGroup[name], value, b.byGroup)
		}
	}
	if len(b.byGroup) != len(want) || len(groupOrder) != len(want) {
		t.Errorf("groups %v, printed in the order %v; want each of %v", b.byGroup, groupOrder, want)
	}
	if b.total != 360 || b.flat["encoding/json.Marshal"] != 0 || b.cumu["encoding/json.Marshal"] != 50 || b.cumu["go.etcd.io/bbolt.(*DB).Update"] != 40 {
		t.Errorf("total %d, json.Marshal flat %d and cumulative %d, bbolt Update cumulative %d; want 360, 0, 50, 40",
			b.total, b.flat["encoding/json.Marshal"], b.cumu["encoding/json.Marshal"], b.cumu["go.etcd.io/bbolt.(*DB).Update"])
	}
	// In an allocation profile, an allocation counts for the code that made it.
	if group := groupOf(cpu.Sample[1], false); group != "JSON" {
		t.Errorf("an allocation in json.Marshal counts for %s, want JSON", group)
	}
}
