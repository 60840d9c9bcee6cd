package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// managerProcess runs the manager binary, and runs it again on restart
// with the same flags.
type managerProcess struct {
	binary, kubeconfig, log string
	extraArgs               []string
	// metricsAddress is where the running process serves its metrics.
	metricsAddress string
	process        *process
}

func newManagerProcess(opts options, kubeconfig, dir string) *managerProcess {
	return &managerProcess{binary: opts.managerBinary, kubeconfig: kubeconfig, log: filepath.Join(dir, "manager.log"),
		extraArgs: strings.Fields(opts.managerArgs)}
}

// start runs the manager on fresh loopback ports: a port picked for an
// earlier run may since have gone to an outgoing connection.
func (m *managerProcess) start() error {
	webhookAddress, err := freeAddress()
	if err != nil {
		return err
	}
	metricsAddress, err := freeAddress()
	if err != nil {
		return err
	}
	args := append([]string{"--allow-insecure-endpoints", "--routes-namespace=" + routesNamespace, "--zap-log-level=error",
		"--metrics-bind-address=" + metricsAddress, "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:0",
		"--webhook-bind-address=" + webhookAddress, "--webhook-url=https://" + webhookAddress}, m.extraArgs...)
	runtimeEnv, err := testenv.ManagerRuntimeEnv()
	if err != nil {
		return err
	}
	p, err := startProcess("manager", m.binary, m.log, append([]string{"KUBECONFIG=" + m.kubeconfig}, runtimeEnv...), args...)
	if err != nil {
		return err
	}
	m.process, m.metricsAddress = p, metricsAddress
	return nil
}

func (m *managerProcess) stop() {
	if m.process != nil {
		m.process.stop()
	}
}

// metrics reads the manager's Prometheus metrics: the sum of each series
// named in names, by its controller label.
func (m *managerProcess) metrics(names ...string) (map[string]map[string]float64, error) {
	response, err := http.Get("http://" + m.metricsAddress + "/metrics")
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("manager metrics: %s", response.Status)
	}
	sums := map[string]map[string]float64{}
	for _, name := range names {
		sums[name] = map[string]float64{}
	}
	scanner := bufio.NewScanner(response.Body)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok || sums[name] == nil {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		number, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("manager metrics: %q: %w", line, err)
		}
		sums[name][labelValue(labels, "controller")] += number
	}
	return sums, scanner.Err()
}

// labelValue finds label="value" in a Prometheus label list.
func labelValue(labels, label string) string {
	for pair := range strings.SplitSeq(labels, ",") {
		if name, value, ok := strings.Cut(pair, "="); ok && name == label {
			return strings.Trim(value, `"`)
		}
	}
	return ""
}

// dispatcherProcess is the running dispatcher binary.
type dispatcherProcess struct {
	*process
	address string
}

// startDispatcher runs the dispatcher binary with its state in dir, without
// publisher authentication, and waits until it listens.
func startDispatcher(binary, kubeconfig, dir string) (*dispatcherProcess, error) {
	addressFile := filepath.Join(dir, "address")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := startProcess("dispatcher", binary, filepath.Join(dir, "dispatcher.log"), []string{"KUBECONFIG=" + kubeconfig},
		"--namespace="+routesNamespace, "--listen-address=127.0.0.1:0", "--listen-address-file="+addressFile,
		"--data-dir="+dir, "--zap-log-level=error", "--egress-allow-cidr=127.0.0.0/8", "--insecure-no-auth")
	if err != nil {
		return nil, err
	}
	address, err := testenv.WaitForAddressFile(addressFile, p.exited, 60*time.Second)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("the dispatcher (see %s): %w", filepath.Join(dir, "dispatcher.log"), err)
	}
	return &dispatcherProcess{process: p, address: address}, nil
}
