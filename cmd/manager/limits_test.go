package main

import (
	"flag"
	"strings"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
)

// TestConcurrentReconciles: the controllers reconcile several objects at
// once by default (one at a time, controller-runtime's default, holds a
// bulk apply to a few endpoints Ready per second), the flag sets how many,
// and fewer than one is refused with the flag's name.
func TestConcurrentReconciles(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    int
		refused bool
	}{
		{args: nil, want: defaultConcurrentReconciles},
		{args: []string{"--max-concurrent-reconciles=3"}, want: 3},
		{args: []string{"--max-concurrent-reconciles=0"}, refused: true},
	} {
		flags := flag.NewFlagSet("manager", flag.ContinueOnError)
		var l limits
		l.bind(flags)
		if err := flags.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var options ctrl.Options
		err := l.apply(&options)
		switch {
		case tc.refused:
			if err == nil || !strings.Contains(err.Error(), "--max-concurrent-reconciles") {
				t.Errorf("%v: %v, want a refusal naming --max-concurrent-reconciles", tc.args, err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case options.Controller.MaxConcurrentReconciles != tc.want:
			t.Errorf("%v: %d concurrent reconciles, want %d", tc.args, options.Controller.MaxConcurrentReconciles, tc.want)
		}
	}
	if defaultConcurrentReconciles < 2 {
		t.Errorf("the default is %d: one at a time makes a bulk apply slow", defaultConcurrentReconciles)
	}
}
