// Command localup runs Hookrelay on this machine for `make dev`: the built
// kube-apiserver and etcd, the CRDs, the manager, the dispatcher, a sample
// receiver that verifies signatures, and the samples. State (etcd, the
// dispatcher's store) stays in the data folder between runs. Ctrl-C stops
// everything.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/hookrelay/hookrelay/internal/samples"
	hookrelayscheme "github.com/hookrelay/hookrelay/internal/scheme"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
)

const operatorNamespace = "hookrelay-system"

// The dispatcher's stores (its --store).
const (
	storeBolt     = "bolt"
	storePostgres = "postgres"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDirFlag := flag.String("data-dir", ".dev", "Folder for the control plane's state, the kubeconfig and the logs; kept between runs.")
	binDir := flag.String("bin-dir", "bin", "Folder of the built binaries (manager, dispatcher) and controlplane/.")
	store := flag.String("store", storeBolt, "The dispatcher's store: bolt (one dispatcher, its file in the data folder) or postgres "+
		"(a PostgreSQL cluster in the data folder, and two dispatcher replicas on it).")
	dispatcherAddress := flag.String("dispatcher-address", "127.0.0.1:8080", "Where the dispatcher listens; port 0 picks a free one (printed).")
	replicaAddress := flag.String("replica-address", "127.0.0.1:8081", "Where the second dispatcher replica listens (--store=postgres); port 0 picks a free one (printed).")
	receiverAddress := flag.String("receiver-address", "127.0.0.1:8090", "Where the sample receiver listens; port 0 picks a free one (printed).")
	sampleURLBase := flag.String("sample-url-base", "",
		"Applies config/samples/ with each WebhookEndpoint's spec.url rewritten to <base>/<name>; default http://<receiver-address>, the sample receiver.")
	webhookAddress := flag.String("webhook-address", "127.0.0.1:9443", "Where the manager serves the admission webhook.")
	managerMetricsAddress := flag.String("manager-metrics-address", "127.0.0.1:8082",
		"Where the manager serves its Prometheus metrics, over plain HTTP on loopback (in a cluster: HTTPS with a token); 0 turns them off.")
	flag.Parse()
	if *store != storeBolt && *store != storePostgres {
		return fmt.Errorf("--store=%s: want %s or %s", *store, storeBolt, storePostgres)
	}
	dataDir, err := filepath.Abs(*dataDirFlag)
	if err != nil {
		return err
	}
	binDirAbs, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "etcd"), 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("starting kube-apiserver and etcd (state in %s)", filepath.Join(dataDir, "etcd"))
	environment := &envtest.Environment{
		BinaryAssetsDirectory: filepath.Join(binDirAbs, "controlplane"),
		CRDDirectoryPaths:     []string{filepath.Join("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	environment.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dataDir, "etcd")}
	config, err := environment.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		step("stopping the control plane")
		if err := environment.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "dev: stopping the control plane:", err)
		}
	}()
	step("CRDs installed")

	admin, err := environment.AddUser(envtest.User{Name: "hookrelay-dev", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfigData, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dataDir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kubeconfigData, 0o600); err != nil {
		return err
	}
	scheme, err := hookrelayscheme.New()
	if err != nil {
		return err
	}
	c, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}
	if err := c.Create(ctx, namespace); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", operatorNamespace, err)
	}

	if err := installWebhook(ctx, c); err != nil {
		return err
	}
	managerLog := filepath.Join(dataDir, "manager.log")
	step("starting the manager (log: %s)", managerLog)
	// The API server calls the manager's webhook on loopback; the manager
	// makes the certificate and sets the URL and caBundle.
	manager, err := start(filepath.Join(binDirAbs, "manager"), []string{"KUBECONFIG=" + kubeconfig}, managerLog,
		"--allow-insecure-endpoints", "--routes-namespace="+operatorNamespace,
		"--metrics-bind-address="+*managerMetricsAddress, "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:0",
		"--webhook-bind-address="+*webhookAddress, "--webhook-url=https://"+*webhookAddress)
	if err != nil {
		return err
	}
	defer manager.stop()
	if err := waitForAdmission(ctx, c, manager); err != nil {
		return fmt.Errorf("%w (see %s)", err, managerLog)
	}
	step("admission webhook serving on https://%s", *webhookAddress)
	if *managerMetricsAddress != "0" && !strings.HasSuffix(*managerMetricsAddress, ":0") {
		step("manager metrics on http://%s/metrics", *managerMetricsAddress)
	}

	dispatchers, stopDispatchers, err := startDispatchers(dataDir, binDirAbs, kubeconfig, *store, []string{*dispatcherAddress, *replicaAddress})
	if err != nil {
		return err
	}
	defer stopDispatchers()

	receiverLog := filepath.Join(dataDir, "receiver.log")
	stopReceiver, boundReceiverAddress, err := serveReceiver(ctx, *receiverAddress, c, receiverLog)
	if err != nil {
		return err
	}
	defer stopReceiver()
	*receiverAddress = boundReceiverAddress
	step("sample receiver on http://%s (log: %s)", *receiverAddress, receiverLog)

	if *sampleURLBase == "" {
		*sampleURLBase = "http://" + *receiverAddress
	}
	step("applying config/samples/ with the endpoints' URLs under %s", *sampleURLBase)
	if err := applySamples(ctx, kubeconfig, *sampleURLBase); err != nil {
		return err
	}
	wait := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready",
		"whep,whsub", "--all", "--timeout=60s")
	if out, err := wait.CombinedOutput(); err != nil {
		return fmt.Errorf("waiting for the samples to be Ready: %w\n%s", err, out)
	}
	for _, d := range dispatchers {
		if err := waitReady("http://"+d.address+"/readyz", d.process); err != nil {
			return fmt.Errorf("%w (see %s)", err, d.log)
		}
	}

	fmt.Printf(`
Hookrelay is ready.

  export KUBECONFIG=%[1]s
  kubectl get whep,whsub

Send an event: the Palm sample endpoint and the Palenca production one (all
events) get it, and the sample receiver prints each delivery, verified:

  curl -sS http://%[4]s/v1/namespaces/default/events -H 'Content-Type: application/json' \
    -d '{"type":"user.created","data":{"user_id":"usr_123"}}'

Read its delivery log (use the id the answer gave):

  curl -sS http://%[4]s/v1/namespaces/default/events/EVENT_ID

Or with the kubectl plugin (built into bin/):

  export PATH=%[7]s:$PATH HOOKRELAY_DISPATCHER_URL=http://%[4]s
  kubectl hookrelay send --type user.created --data '{"user_id":"usr_123"}'
  kubectl hookrelay deliveries palm
  kubectl hookrelay attempts EVENT_ID

%[6]sLogs: receiver %[5]s, %[8]s, manager %[3]s
Press Ctrl-C to stop; the next run keeps the same state.
`, kubeconfig, operatorNamespace, managerLog, dispatchers[0].address, receiverLog, describeReplicas(dispatchers), binDirAbs, dispatcherLogs(dispatchers))

	select {
	case <-ctx.Done():
		fmt.Println()
		step("stopping")
		return nil
	case <-manager.done:
		return fmt.Errorf("the manager exited: %v (see %s)", manager.err, managerLog)
	case d := <-exited(dispatchers):
		return fmt.Errorf("the dispatcher at %s exited: %v (see %s)", d.address, d.process.err, d.log)
	}
}

// applySamples applies config/samples/*.yaml as shipped, except each
// WebhookEndpoint's spec.url, which becomes base/<name>: the files keep the
// https:// URLs of the contract, and the local receiver gets the deliveries.
func applySamples(ctx context.Context, kubeconfig, base string) error {
	files, err := filepath.Glob(filepath.Join("config", "samples", "*.yaml"))
	if err != nil {
		return err
	}
	var objects []*unstructured.Unstructured
	for _, file := range files {
		loaded, err := samples.Load(file)
		if err != nil {
			return err
		}
		objects = append(objects, loaded...)
	}
	if err := samples.RewriteEndpointURLs(objects, samples.Under(base)); err != nil {
		return err
	}
	manifest, err := samples.YAML(objects)
	if err != nil {
		return err
	}
	apply := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	apply.Stdin = bytes.NewReader(manifest)
	apply.Stdout, apply.Stderr = os.Stdout, os.Stderr
	if err := apply.Run(); err != nil {
		return fmt.Errorf("kubectl apply of config/samples/ (URLs under %s): %w", base, err)
	}
	return nil
}

// installWebhook creates or updates the webhook configuration from
// config/webhook/manifests.yaml; the manager then points it at itself.
func installWebhook(ctx context.Context, c client.Client) error {
	path := filepath.Join("config", "webhook", "manifests.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	want := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, want); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	err = c.Create(ctx, want.DeepCopy())
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	// Kept from the last run: take the manifest's webhooks (they may have
	// changed), which the manager's URL and caBundle then replace.
	existing := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(want), existing); err != nil {
		return err
	}
	existing.Webhooks = want.Webhooks
	return c.Update(ctx, existing)
}

// waitForAdmission waits until the API server calls the manager's webhook,
// so that applying the samples does not race its start.
func waitForAdmission(ctx context.Context, c client.Client, manager *process) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-manager.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := webhookv1alpha1.WaitForAdmission(ctx, c, 60*time.Second); err != nil {
		select {
		case <-manager.done:
			return fmt.Errorf("the manager exited: %v", manager.err)
		default:
		}
		return err
	}
	return nil
}

// waitReady polls a readiness URL until it answers 200, or the process exits.
func waitReady(url string, p *process) error {
	deadline := time.Now().Add(60 * time.Second)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v", p.err)
		default:
		}
		response, err := http.Get(url)
		if err != nil {
			last = err.Error()
		} else {
			response.Body.Close()
			if response.StatusCode == http.StatusOK {
				return nil
			}
			last = response.Status
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s was not ready within 60s; last: %s", url, last)
}

// step prints a progress line.
func step(format string, args ...any) {
	fmt.Printf("dev: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

type process struct {
	cmd *exec.Cmd
	// done is closed when the process exits; err is then its exit error.
	done chan struct{}
	err  error
}

// start runs a binary with env added to localup's (KUBECONFIG, at least),
// its output appended to a log file.
func start(binary string, env []string, logPath string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	// Its own process group: Ctrl-C in the terminal reaches only localup,
	// which stops the processes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stop asks the process to drain with SIGTERM and waits for it.
func (p *process) stop() {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		fmt.Fprintln(os.Stderr, "dev: stopping:", err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
