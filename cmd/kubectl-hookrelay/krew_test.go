package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestKrewManifest: plugins/hookrelay.yaml installs this binary with the
// LICENSE on Linux and macOS, amd64 and arm64, each with a checksum.
func TestKrewManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "plugins", "hookrelay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			Homepage         string `json:"homepage"`
			ShortDescription string `json:"shortDescription"`
			Description      string `json:"description"`
			Caveats          string `json:"caveats"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Files  []struct {
					From string `json:"from"`
					To   string `json:"to"`
				} `json:"files"`
				Bin string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || manifest.Kind != "Plugin" || manifest.Metadata.Name != "hookrelay" {
		t.Errorf("apiVersion %s, kind %s, name %s: not krew's Plugin hookrelay", manifest.APIVersion, manifest.Kind, manifest.Metadata.Name)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(manifest.Spec.Version) {
		t.Errorf("version %q is not vMAJOR.MINOR.PATCH", manifest.Spec.Version)
	}
	// krew's index asks for a short description that fits a list.
	if n := len(manifest.Spec.ShortDescription); n == 0 || n > 50 {
		t.Errorf("shortDescription is %d characters, want 1 to 50", n)
	}
	var platforms []string
	for _, platform := range manifest.Spec.Platforms {
		name := platform.Selector.MatchLabels["os"] + "/" + platform.Selector.MatchLabels["arch"]
		platforms = append(platforms, name)
		if platform.Bin != "kubectl-hookrelay" {
			t.Errorf("%s: bin %q", name, platform.Bin)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(platform.SHA256) {
			t.Errorf("%s: sha256 %q is not 64 hex digits", name, platform.SHA256)
		}
		want := "https://github.com/hookrelay/hookrelay/releases/download/" + manifest.Spec.Version + "/kubectl-hookrelay_" +
			platform.Selector.MatchLabels["os"] + "_" + platform.Selector.MatchLabels["arch"] + ".tar.gz"
		if platform.URI != want {
			t.Errorf("%s: uri %s, want %s", name, platform.URI, want)
		}
		var files []string
		for _, file := range platform.Files {
			files = append(files, file.From)
		}
		if !slices.Contains(files, "kubectl-hookrelay") || !slices.Contains(files, "LICENSE") {
			t.Errorf("%s: files %v, want kubectl-hookrelay and LICENSE", name, files)
		}
	}
	slices.Sort(platforms)
	if want := []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("platforms %v, want %v", platforms, want)
	}
}
