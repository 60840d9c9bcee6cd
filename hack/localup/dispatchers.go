package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/internal/pgcluster"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// dispatcher is a running dispatcher process.
type dispatcher struct {
	process *process
	// address is the one it bound (port 0 included).
	address string
	log     string
}

// startDispatchers starts one dispatcher on bbolt at addresses[0], or, with
// the postgres store, a PostgreSQL cluster in the data folder and one
// replica on it at each address. stop stops the replicas, then the cluster.
func startDispatchers(dataDir, binDir, kubeconfig, store string, addresses []string) (dispatchers []*dispatcher, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if store == storeBolt {
		step("starting the dispatcher (store: %s, log: %s)", filepath.Join(dataDir, "dispatcher"), filepath.Join(dataDir, "dispatcher.log"))
		d, err := startDispatcher(binDir, dataDir, "dispatcher", addresses[0], []string{"KUBECONFIG=" + kubeconfig})
		if err != nil {
			return nil, nil, err
		}
		return []*dispatcher{d}, d.process.stop, nil
	}

	postgresDir := filepath.Join(dataDir, "postgres")
	step("starting PostgreSQL (state in %s)", postgresDir)
	// As root, PostgreSQL runs as the postgres user, which must pass through
	// the data folder (not read it) to reach its own.
	if os.Geteuid() == 0 {
		if err := os.Chmod(dataDir, 0o711); err != nil {
			return nil, nil, err
		}
	}
	cluster, err := pgcluster.Start(pgcluster.Options{Dir: postgresDir, Durable: true})
	if err != nil {
		return nil, nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	// Stopped last: after the replicas, which the deferred calls stop first.
	stops = append(stops, func() {
		step("stopping PostgreSQL")
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "dev: stopping PostgreSQL:", err)
		}
	})
	dsn, err := cluster.EnsureDatabase("hookrelay")
	if err != nil {
		return nil, nil, err
	}
	dsnFile := filepath.Join(dataDir, "postgres.dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		return nil, nil, err
	}
	for i, address := range addresses {
		name := fmt.Sprintf("dispatcher-%d", i+1)
		step("starting dispatcher replica %s on PostgreSQL (%s, log: %s)", name, dsn, filepath.Join(dataDir, name+".log"))
		d, err := startDispatcher(binDir, dataDir, name, address,
			// POD_NAME names the replica (--replica-name's default), as in a pod.
			[]string{"KUBECONFIG=" + kubeconfig, "POD_NAME=" + name},
			"--store=postgres", "--postgres-dsn-file="+dsnFile)
		if err != nil {
			return nil, nil, err
		}
		stops = append([]func(){d.process.stop}, stops...)
		dispatchers = append(dispatchers, d)
	}
	return dispatchers, stop, nil
}

// startDispatcher runs the dispatcher binary named name, with its state in
// dataDir/name and its log in dataDir/name.log, and waits until it listens.
func startDispatcher(binDir, dataDir, name, address string, env []string, args ...string) (*dispatcher, error) {
	log := filepath.Join(dataDir, name+".log")
	// The dispatcher names the address it bound (port 0 included) here.
	addressFile := filepath.Join(dataDir, name+".address")
	if err := os.Remove(addressFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	p, err := start(filepath.Join(binDir, "dispatcher"), env, log, append([]string{
		"--namespace=" + operatorNamespace, "--listen-address=" + address, "--listen-address-file=" + addressFile,
		"--data-dir=" + filepath.Join(dataDir, name),
		// The sample receiver listens on loopback.
		"--egress-allow-cidr=127.0.0.0/8",
		// Local development: no tokens needed.
		"--insecure-no-auth"}, args...)...)
	if err != nil {
		return nil, err
	}
	bound, err := testenv.WaitForAddressFile(addressFile, p.done, 60*time.Second)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w (see %s)", name, err, log)
	}
	return &dispatcher{process: p, address: bound, log: log}, nil
}

// describeReplicas tells, with more than one dispatcher, where the others
// listen.
func describeReplicas(dispatchers []*dispatcher) string {
	if len(dispatchers) == 1 {
		return ""
	}
	var others []string
	for _, d := range dispatchers[1:] {
		others = append(others, "http://"+d.address)
	}
	return fmt.Sprintf("The dispatcher runs as %d replicas on PostgreSQL: any of them accepts events and\n"+
		"serves the delivery log; use %s as well as http://%s.\n\n", len(dispatchers), strings.Join(others, ", "), dispatchers[0].address)
}

// dispatcherLogs names the dispatchers' logs for the summary.
func dispatcherLogs(dispatchers []*dispatcher) string {
	if len(dispatchers) == 1 {
		return "dispatcher " + dispatchers[0].log
	}
	var logs []string
	for _, d := range dispatchers {
		logs = append(logs, d.log)
	}
	return "dispatchers " + strings.Join(logs, " ")
}

// exited is a channel that yields the first dispatcher to exit.
func exited(dispatchers []*dispatcher) <-chan *dispatcher {
	first := make(chan *dispatcher, len(dispatchers))
	for _, d := range dispatchers {
		go func() {
			<-d.process.done
			first <- d
		}()
	}
	return first
}
