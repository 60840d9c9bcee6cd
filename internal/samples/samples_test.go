package samples

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestSamplesUseHTTPSAndRewrite: the shipped samples point at https:// URLs
// (the contract), and the rewrite changes only the endpoints' URLs.
func TestSamplesUseHTTPSAndRewrite(t *testing.T) {
	for _, file := range []string{"palm.yaml", "palenca.yaml"} {
		objects, err := Load(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
		if err != nil {
			t.Fatal(err)
		}
		before, err := YAML(objects)
		if err != nil {
			t.Fatal(err)
		}
		endpoints := 0
		for _, object := range objects {
			if object.GetKind() != "WebhookEndpoint" {
				continue
			}
			endpoints++
			url := object.Object["spec"].(map[string]any)["url"].(string)
			if !strings.HasPrefix(url, "https://") {
				t.Errorf("%s: %s has spec.url %q, want https://", file, object.GetName(), url)
			}
		}
		if endpoints == 0 {
			t.Fatalf("%s has no WebhookEndpoint", file)
		}
		if err := RewriteEndpointURLs(objects, Under("http://127.0.0.1:8090")); err != nil {
			t.Fatal(err)
		}
		after, err := YAML(objects)
		if err != nil {
			t.Fatal(err)
		}
		for _, object := range objects {
			if object.GetKind() == "WebhookEndpoint" {
				if url := object.Object["spec"].(map[string]any)["url"]; url != "http://127.0.0.1:8090/"+object.GetName() {
					t.Errorf("%s: rewritten url = %v", object.GetName(), url)
				}
			}
		}
		// Only the url lines differ.
		beforeLines, afterLines := strings.Split(string(before), "\n"), strings.Split(string(after), "\n")
		if len(beforeLines) != len(afterLines) {
			t.Fatalf("%s: rewrite changed the line count", file)
		}
		for i := range beforeLines {
			if beforeLines[i] != afterLines[i] && !strings.HasPrefix(strings.TrimSpace(afterLines[i]), "url: http://127.0.0.1:8090/") {
				t.Errorf("%s: rewrite changed %q into %q", file, beforeLines[i], afterLines[i])
			}
		}
	}
}
