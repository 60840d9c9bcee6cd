package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
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
