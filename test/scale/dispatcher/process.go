package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/test/scale/proc"
)

// dispatcher is the running dispatcher binary.
type dispatcher struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	address string
	log     string
	// runtimeEnv is the Go runtime's settings it runs with (GOMEMLIMIT, GOGC).
	runtimeEnv []string
	// started is when the process started; ready is how long it took from
	// then to /readyz 200.
	started time.Time
	ready   time.Duration
}

// startDispatcher runs the dispatcher on the store in dataDir, without
// publisher authentication, and waits until /readyz answers 200.
func startDispatcher(ctx context.Context, opts options, kubeconfig, dataDir string) (*dispatcher, error) {
	addressFile := filepath.Join(dataDir, "address")
	d := &dispatcher{log: filepath.Join(filepath.Dir(dataDir), "dispatcher.log"), exited: make(chan struct{})}
	logFile, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--store=" + opts.Store, "--data-dir=" + dataDir, "--namespace=" + routesNamespace,
		"--listen-address=127.0.0.1:0", "--listen-address-file=" + addressFile, "--egress-allow-cidr=127.0.0.0/8", "--insecure-no-auth",
		"--zap-time-encoding=rfc3339nano"},
		strings.Fields(opts.dispatcherArgs)...)
	// The runtime's settings of the embedded store's StatefulSet, so that
	// memory is measured as it is bounded in a cluster.
	runtimeEnv, err := testenv.DispatcherRuntimeEnv()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	d.cmd = exec.Command(opts.dispatcherBinary, args...)
	d.cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), runtimeEnv...)
	d.runtimeEnv = runtimeEnv
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := d.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", opts.dispatcherBinary, err)
	}
	go func() {
		_ = d.cmd.Wait()
		logFile.Close()
		close(d.exited)
	}()
	if d.address, err = testenv.WaitForAddressFile(addressFile, d.exited, opts.timeout); err != nil {
		d.stop()
		return nil, fmt.Errorf("the dispatcher (log: %s): %w", d.log, err)
	}
	if err := d.waitReady(ctx, opts.timeout); err != nil {
		d.stop()
		return nil, fmt.Errorf("the dispatcher (log: %s): %w", d.log, err)
	}
	d.started, d.ready = started, time.Since(started)
	return d, nil
}

// waitReady polls /readyz until it answers 200.
func (d *dispatcher) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		request, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.address+"/readyz", nil)
		if err != nil {
			return err
		}
		response, err := client.Do(request)
		if err == nil {
			response.Body.Close()
			if response.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-d.exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %s", timeout)
		}
	}
}

func (d *dispatcher) publishURL(namespace string) string {
	return "http://" + d.address + "/v1/namespaces/" + namespace + "/events"
}

// stop sends SIGTERM and waits for the process to exit.
func (d *dispatcher) stop() {
	if err := proc.Stop(d.cmd.Process, d.exited); err != nil {
		fmt.Fprintf(os.Stderr, "scale: stopping the dispatcher: %v\n", err)
	}
}

// memory reads the resident set from /proc, now and at its peak, split
// into anonymous memory (the Go heap and stacks) and file pages (a
// memory-mapped store file counts there), and the Go heap in use as the
// dispatcher's /metrics reports it.
func (d *dispatcher) memory() string {
	fields, err := proc.Status(d.cmd.Process.Pid)
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	var heap string
	if inUse, err := d.metric("go_memstats_heap_inuse_bytes"); err != nil {
		heap = fmt.Sprintf("unknown (%v)", err)
	} else {
		heap = fmt.Sprintf("%.1f MiB", inUse/(1<<20))
	}
	return fmt.Sprintf("VmRSS %s (VmHWM peak %s; RssAnon %s, RssFile %s), Go heap in use %s",
		fields["VmRSS"], fields["VmHWM"], fields["RssAnon"], fields["RssFile"], heap)
}

// metric reads one unlabelled series from the dispatcher's /metrics.
func (d *dispatcher) metric(name string) (float64, error) {
	response, err := http.Get("http://" + d.address + "/metrics")
	if err != nil {
		return 0, err
	}
	defer response.Body.Close()
	scanner := bufio.NewScanner(response.Body)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		if value, ok := strings.CutPrefix(scanner.Text(), name+" "); ok {
			return strconv.ParseFloat(value, 64)
		}
	}
	if err := scanner.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

// clockTicks is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTicks = 100

// cpu is the CPU time the dispatcher has used so far, user and system: a
// figure of its own work that the load of other processes on the machine
// does not change much, unlike rates.
func (d *dispatcher) cpu() (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after it; utime and stime are fields 14 and 15 of the whole line.
	_, rest, ok := strings.Cut(string(stat), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", d.cmd.Process.Pid)
	}
	var ticks int64
	for _, field := range fields[11:13] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", d.cmd.Process.Pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// startPhases reads from the log when the dispatcher was listening (its
// store open) and when it logged ready (routes loaded, stored deliveries
// recovered), as offsets from the process start.
func (d *dispatcher) startPhases() (listening, ready time.Duration, err error) {
	data, err := os.ReadFile(d.log)
	if err != nil {
		return 0, 0, err
	}
	var line struct {
		Logger string `json:"logger"`
		Msg    string `json:"msg"`
		TS     string `json:"ts"`
	}
	found := map[string]time.Duration{}
	for raw := range strings.SplitSeq(string(data), "\n") {
		if json.Unmarshal([]byte(raw), &line) != nil || line.Logger != "dispatcher" || (line.Msg != "listening" && line.Msg != "ready") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, line.TS)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", d.log, err)
		}
		found[line.Msg] = at.Sub(d.started)
	}
	if len(found) != 2 {
		return 0, 0, fmt.Errorf("%s: no listening and ready lines", d.log)
	}
	return found["listening"], found["ready"], nil
}
