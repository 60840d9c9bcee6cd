package main

import (
	"os"
	"testing"
)

func TestStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       int64
		wantErr    bool
	}{
		{name: "plain", want: 1234 + 56,
			stat: "4242 (dispatcher) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 56 0 0 20 0 9 0 100 1000 200 18446744073709551615"},
		{name: "spaces and parentheses in the name", want: 7 + 8,
			stat: "17 (a) b (c) R 1 17 17 0 -1 0 0 0 0 0 7 8 0 0 20 0 1 0 1 1 1"},
		{name: "no name", stat: "17 a R 1", wantErr: true},
		{name: "short", stat: "17 (a) R 1 17 17", wantErr: true},
		{name: "not a number", stat: "17 (a) R 1 17 17 0 -1 0 0 0 0 0 x 8 0", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statTicks(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("statTicks = %d, %v; want %d (error: %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestProcessesCPUReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	if _, err := processesCPU([]int{os.Getpid()}); err != nil {
		t.Fatal(err)
	}
}
