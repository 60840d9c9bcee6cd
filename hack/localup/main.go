// Command localup runs Hookrelay on this machine for `make dev`: the built
// kube-apiserver and etcd (state kept under the data folder between runs),
// the CRDs, the manager, and the samples. Ctrl-C stops everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const operatorNamespace = "hookrelay-system"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDirFlag := flag.String("data-dir", ".dev", "Folder for the control plane's state, the kubeconfig and the logs; kept between runs.")
	binDir := flag.String("bin-dir", "bin", "Folder of the built binaries (manager) and controlplane/.")
	flag.Parse()
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
	c, err := client.New(config, client.Options{})
	if err != nil {
		return err
	}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}
	if err := c.Create(ctx, namespace); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", operatorNamespace, err)
	}

	managerLog := filepath.Join(dataDir, "manager.log")
	step("starting the manager (log: %s)", managerLog)
	manager, err := start(filepath.Join(binDirAbs, "manager"), kubeconfig, managerLog,
		"--allow-insecure-endpoints", "--routes-namespace="+operatorNamespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0")
	if err != nil {
		return err
	}
	defer manager.stop()

	step("applying config/samples/")
	apply := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "config/samples/")
	apply.Stdout, apply.Stderr = os.Stdout, os.Stderr
	if err := apply.Run(); err != nil {
		return fmt.Errorf("kubectl apply -f config/samples/: %w", err)
	}
	wait := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready",
		"whep,whsub", "--all", "--timeout=60s")
	if out, err := wait.CombinedOutput(); err != nil {
		return fmt.Errorf("waiting for the samples to be Ready: %w\n%s", err, out)
	}

	fmt.Printf(`
Hookrelay is ready.

  export KUBECONFIG=%[1]s
  kubectl get whep,whsub
  kubectl get configmaps -n %[2]s -l hookrelay.dev/routes
  kubectl get secrets -n %[2]s -l hookrelay.dev/keys

Manager log: %[3]s
Press Ctrl-C to stop; the next run keeps the same state.
`, kubeconfig, operatorNamespace, managerLog)

	select {
	case <-ctx.Done():
		fmt.Println()
		step("stopping")
		return nil
	case err := <-manager.done:
		return fmt.Errorf("the manager exited: %v (see %s)", err, managerLog)
	}
}

// step prints a progress line.
func step(format string, args ...any) {
	fmt.Printf("dev: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

type process struct {
	cmd  *exec.Cmd
	done chan error
}

// start runs a binary with KUBECONFIG set, its output appended to a log file.
func start(binary, kubeconfig, logPath string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &process{cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logFile.Close()
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
