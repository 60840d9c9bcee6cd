package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

func TestProfilingListensOnLoopbackOnly(t *testing.T) {
	for _, address := range []string{"0.0.0.0:6060", ":6060", "[::]:6060", "192.0.2.1:6060", "example.com:6060"} {
		if listener, err := listenLoopback(address); err == nil {
			listener.Close()
			t.Errorf("%s was accepted as a profiling address", address)
		} else if !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("%s: %v, want an error saying it is not a loopback address", address, err)
		}
	}
	for _, address := range []string{"127.0.0.1:0", "[::1]:0"} {
		listener, err := listenLoopback(address)
		if err != nil {
			if address == "[::1]:0" {
				continue // no IPv6 loopback here
			}
			t.Fatalf("%s: %v", address, err)
		}
		listener.Close()
	}
}

// TestUnsafeSettingsWarnRepeatedly: each warning is logged at start and
// again every interval.
func TestUnsafeSettingsWarnRepeatedly(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		warnEvery(ctx, log, time.Millisecond, []warning{{"--insecure-no-auth", "anyone can publish"}})
		close(done)
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := len(lines)
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d warnings logged, want at least 3", n)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, line := range lines {
		if !strings.Contains(line, `"msg"="WARNING: --insecure-no-auth is set: anyone can publish"`) || !strings.Contains(line, `"warning"=true`) {
			t.Fatalf("logged %s, want the WARNING message with warning=true", line)
		}
	}
}

// TestStoreFlags: --store names one of the three stores, and postgres needs a
// DSN from --postgres-dsn-file or the environment; each refusal names the
// flag to fix.
func TestStoreFlags(t *testing.T) {
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte("host=/run/postgresql dbname=hookrelay\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const fromEnv = "host=db.example dbname=hookrelay"
	cases := []struct {
		name, store, dsnFile, env string
		wantDSN, wantErr          string
	}{
		{name: "pebble by default", store: storePebble},
		{name: "bolt", store: storeBolt},
		{name: "unknown store", store: "sqlite", wantErr: `--store "sqlite" is not a store: choose pebble (embedded, the default), bolt (the former embedded store) or postgres`},
		{name: "empty store", store: "", wantErr: `--store "" is not a store`},
		{name: "DSN file with bolt", store: storeBolt, dsnFile: dsnFile, wantErr: "--postgres-dsn-file goes with --store=postgres, not --store=bolt"},
		{name: "DSN file with pebble", store: storePebble, dsnFile: dsnFile, wantErr: "--postgres-dsn-file goes with --store=postgres, not --store=pebble"},
		{name: "postgres without a DSN", store: storePostgres, wantErr: "--store=postgres needs a DSN: set --postgres-dsn-file (a mounted Secret's file) or $HOOKRELAY_POSTGRES_DSN"},
		{name: "DSN file, newline trimmed", store: storePostgres, dsnFile: dsnFile, env: fromEnv, wantDSN: "host=/run/postgresql dbname=hookrelay"},
		{name: "DSN from the environment", store: storePostgres, env: fromEnv, wantDSN: fromEnv},
		{name: "missing DSN file", store: storePostgres, dsnFile: filepath.Join(dir, "absent"), env: fromEnv, wantErr: "--postgres-dsn-file: open "},
		{name: "empty DSN file", store: storePostgres, dsnFile: emptyFile, env: fromEnv, wantErr: "--postgres-dsn-file " + emptyFile + " is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := validOptions()
			opts.store, opts.postgresDSNFile = tc.store, tc.dsnFile
			getenv := func(name string) string {
				if name == postgresDSNEnv {
					return tc.env
				}
				return ""
			}
			err := opts.check()
			var dsn string
			if err == nil && opts.store == storePostgres {
				dsn, err = opts.postgresDSN(getenv)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			case dsn != tc.wantDSN:
				t.Fatalf("DSN %q, want %q", dsn, tc.wantDSN)
			}
		})
	}
}

// validOptions are the flags' defaults that check accepts.
func validOptions() options {
	return options{
		store: storePebble, headerPrefix: "Hookrelay", poisonAfter: 3,
		readHeaderTimeout: time.Second, readTimeout: time.Second, writeTimeout: time.Second, idleTimeout: time.Second, drainTimeout: time.Second,
		authFailureRate: 1, authFailureBurst: 1,
	}
}

// sweeps counts Sweep calls and their cut-offs.
type sweeps struct {
	store.Store
	mu   sync.Mutex
	cuts []time.Time
}

func (s *sweeps) Sweep(_ context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts = append(s.cuts, before)
	return 0, nil
}

func (s *sweeps) made() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cuts)
}

// TestFirstSweepWaits: the start does not walk the store; the first sweep
// runs firstSweepAfter later, and hourly after that.
func TestFirstSweepWaits(t *testing.T) {
	g := NewWithT(t)
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fake := clocktesting.NewFakeClock(start)
	db := &sweeps{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sweep(ctx, db, 24*time.Hour, fake, logr.Discard()); close(done) }()
	defer func() { cancel(); <-done }()

	g.Eventually(fake.HasWaiters).Should(BeTrue())
	fake.Step(firstSweepAfter - time.Second)
	// Absence: a sweep started by that step would run within microseconds.
	g.Consistently(db.made).WithTimeout(200 * time.Millisecond).Should(BeEmpty())
	fake.Step(time.Second)
	g.Eventually(db.made).Should(Equal([]time.Time{start.Add(firstSweepAfter - 24*time.Hour)}))
	g.Eventually(fake.HasWaiters).Should(BeTrue())
	fake.Step(time.Hour)
	g.Eventually(db.made).Should(HaveLen(2))
}
