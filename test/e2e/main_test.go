// Package e2e tests Hookrelay whole: the real API server, the controllers,
// the dispatcher binary, and real HTTP receivers on 127.0.0.1.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/hookrelay/hookrelay/controllers"
	"github.com/hookrelay/hookrelay/internal/pgtest"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// rotationGrace is short, so that a test can see a rotated-out key expire.
const rotationGrace = 10 * time.Second

// routesNamespace is the operator namespace of the e2e system.
const routesNamespace = "hookrelay-system"

var (
	env *testenv.Env
	// dispatcherBinary is built once, with the race detector, beside
	// kubectl-hookrelay.
	dispatcherBinary string
	// egress carries the API server's service proxy to dispatchers on
	// 127.0.0.1.
	egress *egressProxy
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	buildDir, err := os.MkdirTemp("", "hookrelay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(buildDir)
	// The PostgreSQL cluster, if a test started one, stops after the tests.
	defer func() {
		if err := pgtest.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}()
	dispatcherBinary = filepath.Join(buildDir, "dispatcher")
	build := exec.Command("go", "build", "-race", "-o", buildDir+"/", "./cmd/dispatcher", "./cmd/kubectl-hookrelay")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the dispatcher and the kubectl plugin:", err)
		return 1
	}
	// kubectl finds the plugin on PATH.
	os.Setenv("PATH", buildDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	if egress, err = startEgressProxy(buildDir); err != nil {
		fmt.Fprintln(os.Stderr, "starting the egress proxy:", err)
		return 1
	}
	defer egress.close()
	if env, err = testenv.StartWith(testenv.Options{APIServerFlags: map[string]string{"egress-selector-config-file": egress.ConfigFile}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: routesNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr, err := env.NewManager(controllers.CacheOptions(routesNamespace))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Receivers listen on http://127.0.0.1.
	if err := controllers.Setup(mgr, controllers.Options{Namespace: routesNamespace, AllowInsecure: true, RotationGrace: rotationGrace}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	return code
}
