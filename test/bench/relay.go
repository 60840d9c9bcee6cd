package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// relaySubcommand, as the first argument, makes the bench binary serve the
// bare relay instead of benchmarking: the bench runs it as a process of its
// own, so that the relay pays the same process boundary (its own runtime,
// scheduler and GC) as the dispatcher it is compared with.
const relaySubcommand = "relay"

// relayHandler is the baseline: accept the POST, forward it to the first
// fanOut targets at once, answer when all answered.
func relayHandler(targets []string, fanOut int) http.Handler {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var wg sync.WaitGroup
		for _, target := range targets[:fanOut] {
			wg.Go(func() {
				forward, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
				forward.Header.Set("Content-Type", "application/json")
				forward.Header.Set("X-Event-Id", req.Header.Get("X-Event-Id"))
				if response, err := client.Do(forward); err == nil {
					_, _ = io.Copy(io.Discard, response.Body)
					response.Body.Close()
				}
			})
		}
		wg.Wait()
		w.WriteHeader(http.StatusAccepted)
	})
}

// relayPlacement is where a relay runs: in the bench process (sharing its
// runtime with the publishers and receivers), or in a process of its own.
type relayPlacement struct {
	name  string
	start func(targets []string, fanOut int, dir string) (runningRelay, error)
}

// runningRelay is a started relay, measured as a dispatcher (its name set
// by the caller), and its stop.
type runningRelay struct {
	dispatcher
	stop func()
}

// relayPlacements are both, measured in each run: the relay in its own
// process is the baseline of the ratios; the in-bench relay is the
// placement of earlier benches, printed for comparison with their figures.
var relayPlacements = []relayPlacement{
	{name: "relay", start: startRelayProcess},
	{name: "relay-in-bench", start: startRelayInBench},
}

func startRelayInBench(targets []string, fanOut int, _ string) (runningRelay, error) {
	server := httptest.NewServer(relayHandler(targets, fanOut))
	return runningRelay{dispatcher: dispatcher{publishURLs: []string{server.URL}}, stop: server.Close}, nil
}

// startRelayProcess runs this binary's relay subcommand, which binds a free
// loopback port and names it in a file under dir.
func startRelayProcess(targets []string, fanOut int, dir string) (runningRelay, error) {
	self, err := os.Executable()
	if err != nil {
		return runningRelay{}, err
	}
	// A folder of each start's own: a stale address of an earlier relay
	// would be read as this one's.
	own, err := os.MkdirTemp(dir, "relay-")
	if err != nil {
		return runningRelay{}, err
	}
	addressFile := filepath.Join(own, "address")
	cmd := exec.Command(self, relaySubcommand, "--targets="+strings.Join(targets, ","), "--fan-out="+strconv.Itoa(fanOut),
		"--address-file="+addressFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	address, stop, err := startListening(cmd, addressFile, 30*time.Second)
	if err != nil {
		return runningRelay{}, fmt.Errorf("the relay process: %w", err)
	}
	return runningRelay{dispatcher: dispatcher{publishURLs: []string{"http://" + address}, pids: []int{cmd.Process.Pid}}, stop: stop}, nil
}

// serveRelay is the relay subcommand: serve relayHandler on a free loopback
// port until SIGTERM.
func serveRelay(args []string) error {
	flags := flag.NewFlagSet(relaySubcommand, flag.ContinueOnError)
	targets := flags.String("targets", "", "Receiver URLs, comma-separated.")
	fanOut := flags.Int("fan-out", 1, "Receivers each event is forwarded to (the first ones of --targets).")
	addressFile := flags.String("address-file", "", "File to write the bound address to.")
	if err := flags.Parse(args); err != nil {
		return err
	}
	targetList := strings.Split(*targets, ",")
	switch {
	case *targets == "":
		return errors.New("--targets is empty")
	case *fanOut < 1 || *fanOut > len(targetList):
		return fmt.Errorf("--fan-out=%d: must be between 1 and the %d --targets", *fanOut, len(targetList))
	case *addressFile == "":
		return errors.New("--address-file is empty")
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// Written through a rename, so that a reader sees it whole.
	partial := *addressFile + ".partial"
	if err := os.WriteFile(partial, []byte(listener.Addr().String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(partial, *addressFile); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	server := &http.Server{Handler: relayHandler(targetList, *fanOut), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
