// Package dev tests `make dev` as a new user meets it: start it, follow the
// printed instructions, stop it with Ctrl-C, start it again.
package dev

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hookrelay/hookrelay/internal/pgtest"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// localup is a running `make dev`.
type localup struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	output strings.Builder
	ready  chan struct{}
	done   chan struct{}
}

func (l *localup) printed() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.output.String()
}

// start runs `make dev STORE=store` in the repository, as a user would (with
// its state in dataDir, and the dispatchers and the sample receiver on ports
// they pick and print, not the fixed ones a user gets), and waits for "ready".
func start(t *testing.T, store, dataDir string) *localup {
	t.Helper()
	cmd := exec.Command("make", "dev", "STORE="+store, "DEV_DIR="+dataDir,
		"DEV_FLAGS=--dispatcher-address=127.0.0.1:0 --replica-address=127.0.0.1:0 --receiver-address=127.0.0.1:0 --manager-metrics-address=127.0.0.1:0")
	cmd.Dir = testenv.RepoRoot()
	// Its own process group, so that Ctrl-C reaches make and its children
	// as it does in a terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = withoutMakeVariables(os.Environ())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	l := &localup{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		scanner := bufio.NewScanner(stdout)
		readySeen := false
		for scanner.Scan() {
			l.mu.Lock()
			l.output.WriteString(scanner.Text() + "\n")
			l.mu.Unlock()
			if !readySeen && strings.HasPrefix(scanner.Text(), "Press Ctrl-C to stop") {
				readySeen = true
				close(l.ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-l.done
		if t.Failed() {
			t.Logf("make dev printed:\n%s", l.printed())
		}
	})
	select {
	case <-l.ready:
	case <-l.done:
		t.Fatalf("make dev exited before it was ready:\n%s", l.printed())
	case <-time.After(3 * time.Minute):
		t.Fatalf("make dev was not ready within 3 minutes:\n%s", l.printed())
	}
	return l
}

// interrupt stops it with Ctrl-C and expects everything to stop cleanly.
func (l *localup) interrupt(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-l.done:
	case <-time.After(time.Minute):
		t.Fatalf("make dev did not stop on Ctrl-C:\n%s", l.printed())
	}
	printed := l.printed()
	if !regexp.MustCompile(`(?m)^dev: \S+ stopping the control plane$`).MatchString(printed) {
		t.Fatalf("make dev did not stop cleanly on Ctrl-C:\n%s", printed)
	}
	if regexp.MustCompile(`(?m)^dev: [^0-9]`).MatchString(printed) {
		t.Fatalf("make dev reported an error:\n%s", printed)
	}
}

// withoutMakeVariables drops the outer make's variables (`make test-dev` runs
// this test), so that `make dev` starts as it does from a shell.
func withoutMakeVariables(environ []string) []string {
	var out []string
	for _, variable := range environ {
		if !strings.HasPrefix(variable, "MAKEFLAGS=") && !strings.HasPrefix(variable, "MFLAGS=") && !strings.HasPrefix(variable, "MAKELEVEL=") {
			out = append(out, variable)
		}
	}
	return out
}

// shell runs a printed command line with the printed KUBECONFIG.
func shell(t *testing.T, kubeconfig, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return string(out)
}

// TestMakeDevDeliversAndKeepsItsState runs `make dev` and `make dev
// STORE=postgres`, whose second replica serves the delivery log of an event
// the first accepted.
func TestMakeDevDeliversAndKeepsItsState(t *testing.T) {
	for _, store := range []string{"", "postgres"} {
		t.Run("STORE="+store, func(t *testing.T) { testMakeDev(t, store) })
	}
}

func testMakeDev(t *testing.T, store string) {
	g := NewWithT(t)
	dataDir := pgtest.TempDir(t)
	if store == "postgres" {
		t.Cleanup(func() { stopLeftoverPostgres(t, filepath.Join(dataDir, "postgres", "data")) })
	}

	dev := start(t, store, dataDir)
	printed := dev.printed()
	kubeconfig := regexp.MustCompile(`export KUBECONFIG=(\S+)`).FindStringSubmatch(printed)[1]
	receiverLog := regexp.MustCompile(`Logs: receiver (\S+),`).FindStringSubmatch(printed)[1]

	// The samples are Ready.
	table := shell(t, kubeconfig, "kubectl get whep,whsub --no-headers")
	rows := strings.Split(strings.TrimSpace(table), "\n")
	g.Expect(rows).To(HaveLen(6), table)
	for _, row := range rows {
		g.Expect(row).To(MatchRegexp(`\sTrue\s`), table)
	}

	// The printed send line makes the receiver print a verified delivery.
	send := regexp.MustCompile(`(?m)^  (curl -sS \S+/events -H .*\\\n\s+-d .*)$`).FindStringSubmatch(printed)
	g.Expect(send).NotTo(BeNil(), "no send line in:\n%s", printed)
	var answer struct {
		ID         string
		Deliveries int
	}
	g.Expect(json.Unmarshal([]byte(shell(t, kubeconfig, send[1])), &answer)).To(Succeed())
	g.Expect(answer.Deliveries).To(Equal(2), "palm and palenca-production (all events)")
	readReceiverLog := func() (string, error) {
		log, err := os.ReadFile(receiverLog)
		return string(log), err
	}
	g.Eventually(readReceiverLog).WithTimeout(30 * time.Second).Should(SatisfyAll(
		MatchRegexp(`POST /palm event=`+regexp.QuoteMeta(answer.ID)+` type=user.created Palm-Signature verified, webhook-signature verified`),
		// Palenca's sample signs with Standard Webhooks only.
		MatchRegexp(`POST /palenca-production event=`+regexp.QuoteMeta(answer.ID)+` type=- webhook-signature verified\n`),
	))
	dev.interrupt(t)

	// Started again on the same data folder, the delivery log still has it.
	dev = start(t, store, dataDir)
	printed = dev.printed()
	logLine := regexp.MustCompile(`(?m)^  (curl -sS (\S+)/v1/\S+/events/EVENT_ID)$`).FindStringSubmatch(printed)
	g.Expect(logLine).NotTo(BeNil())
	if store == "postgres" {
		// Read from the other replica.
		replica := regexp.MustCompile(`use (http://\S+) as well as`).FindStringSubmatch(printed)
		g.Expect(replica).NotTo(BeNil(), "no second replica in:\n%s", printed)
		logLine[1] = strings.Replace(logLine[1], logLine[2], replica[1], 1)
	}
	var eventLog struct {
		Deliveries []struct {
			Endpoint string
			State    string
			Attempts []struct {
				StatusCode int `json:"status_code"`
			}
		}
	}
	out := shell(t, kubeconfig, strings.Replace(logLine[1], "EVENT_ID", answer.ID, 1))
	g.Expect(json.Unmarshal([]byte(out), &eventLog)).To(Succeed(), out)
	g.Expect(eventLog.Deliveries).To(HaveLen(2), out)
	endpoints := []string{}
	for _, delivery := range eventLog.Deliveries {
		endpoints = append(endpoints, delivery.Endpoint)
		g.Expect(delivery.State).To(Equal("succeeded"), out)
		g.Expect(delivery.Attempts[0].StatusCode).To(Equal(200), out)
	}
	g.Expect(endpoints).To(ConsistOf("palm", "palenca-production"))
	dev.interrupt(t)
}

// stopLeftoverPostgres stops the PostgreSQL server that `make dev` leaves
// running when the test kills it instead of interrupting it: pg_ctl starts
// the server in a session of its own, out of reach of the kill.
func stopLeftoverPostgres(t *testing.T, dataDir string) {
	t.Helper()
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return // stopped
	}
	if err != nil {
		t.Error(err)
		return
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		t.Errorf("postmaster.pid: %v", err)
		return
	}
	// SIGQUIT: PostgreSQL's immediate shutdown.
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		if !errors.Is(err, syscall.ESRCH) {
			t.Error(err)
		}
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Errorf("PostgreSQL (pid %d) did not stop", pid)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
