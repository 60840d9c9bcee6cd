package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPluginLinksNoDispatcher: the plugin is a client; it must not link the
// dispatcher's store (bbolt), its CEL filters or its delivery engine.
func TestPluginLinksNoDispatcher(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{"go.etcd.io/bbolt", "github.com/google/cel-go", "github.com/hookrelay/hookrelay/dispatcher/"}
	for dependency := range strings.FieldsSeq(string(out)) {
		for _, prefix := range forbidden {
			if strings.HasPrefix(dependency, prefix) {
				t.Errorf("kubectl-hookrelay links %s", dependency)
			}
		}
	}
}
