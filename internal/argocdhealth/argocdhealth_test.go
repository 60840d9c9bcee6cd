package argocdhealth

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// configDir holds the shipped health check.
var configDir = filepath.Join("..", "..", "config", "argocd")

func script(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(configDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

// TestPatchHoldsTheScript fails when argocd-cm-patch.yaml, which users
// apply, and health.lua, which the tests run, drift apart.
func TestPatchHoldsTheScript(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(configDir, "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var patch corev1.ConfigMap
	if err := yaml.UnmarshalStrict(text, &patch); err != nil {
		t.Fatal(err)
	}
	want := script(t)
	for _, kind := range []string{"WebhookEndpoint", "WebhookSubscription"} {
		key := "resource.customizations.health.hookrelay.dev_" + kind
		if got, ok := patch.Data[key]; !ok || got != want {
			t.Errorf("argocd-cm-patch.yaml key %s differs from health.lua; copy health.lua into it", key)
		}
	}
	if len(patch.Data) != 2 {
		t.Errorf("argocd-cm-patch.yaml has %d keys, want the 2 health checks", len(patch.Data))
	}
}

// TestScriptOnEdgeCases covers what the e2e objects do not show: no
// status yet, a status older than the spec. The e2e suite runs the script
// on real objects of each health case.
func TestScriptOnEdgeCases(t *testing.T) {
	ready := map[string]any{"type": "Ready", "status": "True", "reason": "Published", "message": "published"}
	for _, tc := range []struct {
		name string
		obj  map[string]any
		want Health
	}{
		{"no status", map[string]any{"metadata": map[string]any{"generation": int64(1)}},
			Health{"Progressing", "Waiting for the controller to report status"}},
		{"older status", map[string]any{"metadata": map[string]any{"generation": int64(2)},
			"status": map[string]any{"observedGeneration": int64(1), "conditions": []any{ready}}},
			Health{"Progressing", "Waiting for the controller to handle generation 2"}},
		{"current", map[string]any{"metadata": map[string]any{"generation": int64(2)},
			"status": map[string]any{"observedGeneration": int64(2), "conditions": []any{ready}}},
			Health{"Healthy", "Published: published"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Run(script(t), tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRunRefusesBadScripts: a script error or an unknown status is an error.
func TestRunRefusesBadScripts(t *testing.T) {
	for _, bad := range []string{`return {status = "Fine"}`, `return 1`, `error("boom")`, `os.exit(1)`} {
		if _, err := Run(bad, map[string]any{}); err == nil {
			t.Errorf("Run(%q) succeeded, want an error", bad)
		}
	}
}
