package statusapply

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1ac "github.com/hookrelay/hookrelay/api/applyconfiguration/api/v1alpha1"
	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

func TestSetConditions(t *testing.T) {
	earlier := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	now := time.Date(2026, 2, 3, 4, 5, 6, 789, time.UTC)
	existing := []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Published", LastTransitionTime: earlier}}
	for _, tc := range []struct {
		name   string
		want   metav1.Condition
		wantAt metav1.Time
	}{
		{"same status keeps the time", metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Other"}, earlier},
		{"new status takes now, to the second", metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: "Invalid"},
			metav1.NewTime(now.Truncate(time.Second))},
		{"new type takes now", metav1.Condition{Type: "Disabled", Status: metav1.ConditionFalse, Reason: "Enabled"},
			metav1.NewTime(now.Truncate(time.Second))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settled := SetConditions(existing, now, tc.want)
			if len(settled) != 1 || !settled[0].LastTransitionTime.Equal(&tc.wantAt) || settled[0].Reason != tc.want.Reason {
				t.Errorf("SetConditions = %+v, want reason %s at %s", settled, tc.want.Reason, tc.wantAt)
			}
			if existing[0].Reason != "Published" || len(existing) != 1 {
				t.Errorf("existing was modified: %+v", existing)
			}
		})
	}
}

// TestWriter applies status on the real API server and counts the applies
// that reach it.
func TestWriter(t *testing.T) {
	env := testenv.StartForTest(t)
	ctx := context.Background()
	endpoint := &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: env.Namespace(t), Name: "status"},
		Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: "https://receiver.example/status"},
	}
	if err := env.Client.Create(ctx, endpoint); err != nil {
		t.Fatal(err)
	}
	counting, applies := env.CountingStatusApplies(t)
	read := func() *hookrelayv1alpha1.WebhookEndpoint {
		t.Helper()
		current := &hookrelayv1alpha1.WebhookEndpoint{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), current); err != nil {
			t.Fatal(err)
		}
		return current
	}
	ready := func(current *hookrelayv1alpha1.WebhookEndpoint, reason string) runtime.ApplyConfiguration {
		conditions := SetConditions(current.Status.Conditions, time.Now(),
			metav1.Condition{Type: hookrelayv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: "m"})
		return hookrelayv1alpha1ac.WebhookEndpoint(endpoint.Name, endpoint.Namespace).WithStatus(
			hookrelayv1alpha1ac.WebhookEndpointStatus().WithConditions(Conditions(conditions...)...).WithSecretName("s"))
	}
	expectApplies := func(step string, want int32) {
		t.Helper()
		if got := applies.Swap(0); got != want {
			t.Errorf("%s: %d applies reached the API server, want %d", step, got, want)
		}
	}
	apply := func(w *Writer, current *hookrelayv1alpha1.WebhookEndpoint, desired runtime.ApplyConfiguration) {
		t.Helper()
		var object client.Object
		if current != nil {
			object = current
		}
		if err := w.Apply(ctx, endpoint.UID, object, desired); err != nil {
			t.Fatal(err)
		}
	}

	controller := &Writer{Client: counting, FieldOwner: "test-controller"}
	apply(controller, read(), ready(read(), "First"))
	expectApplies("first write", 1)
	first := read()
	apply(controller, first, ready(first, "First"))
	expectApplies("same status again", 0)
	apply(&Writer{Client: counting, FieldOwner: "test-controller"}, first, ready(first, "First"))
	expectApplies("a new process, status already there", 0)

	// A cache that still shows First after Second was written must not
	// stop First from being written again.
	apply(controller, first, ready(first, "Second"))
	apply(controller, first, ready(first, "First"))
	expectApplies("back to a status the stale object shows", 2)
	if got := read().Status.Conditions[0]; got.Reason != "First" || !got.LastTransitionTime.Equal(&first.Status.Conditions[0].LastTransitionTime) {
		t.Errorf("Ready = %+v, want reason First with the first lastTransitionTime %s", got, first.Status.Conditions[0].LastTransitionTime)
	}

	// Another owner, which does not read the object, adds its condition
	// without erasing the first owner's.
	dispatcher := &Writer{Client: counting, FieldOwner: "test-dispatcher"}
	enabled := SetConditions(nil, time.Now(),
		metav1.Condition{Type: hookrelayv1alpha1.ConditionDisabled, Status: metav1.ConditionFalse, Reason: "Enabled", Message: "m"})
	disabled := func() runtime.ApplyConfiguration {
		// Fresh each time: Apply fills it with the object the server returns.
		return hookrelayv1alpha1ac.WebhookEndpoint(endpoint.Name, endpoint.Namespace).WithStatus(
			hookrelayv1alpha1ac.WebhookEndpointStatus().WithConditions(Conditions(enabled...)...).WithConsecutiveFailures(0))
	}
	apply(dispatcher, nil, disabled())
	apply(dispatcher, nil, disabled())
	expectApplies("the other owner, twice", 1)
	final := read()
	if len(final.Status.Conditions) != 2 || final.Status.SecretName != "s" {
		t.Errorf("status = %+v, want both owners' conditions and the controller's secretName", final.Status)
	}
}

// TestNoHandBuiltStatusPatch fails if a status patch is built from maps
// rather than from the generated apply configurations.
func TestNoHandBuiltStatusPatch(t *testing.T) {
	handBuilt := []*regexp.Regexp{
		regexp.MustCompile(`map\[string\](any|interface\{\})\{\s*"status"`),
		regexp.MustCompile(`ApplyConfiguration` + `FromUnstructured`),
		regexp.MustCompile(`unstructured\.SetNested\w*\([^)]*"status"`),
	}
	root := testenv.RepoRoot()
	err := filepath.WalkDir(root, func(path string, entry os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relative, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if entry.IsDir() {
			switch {
			case relative != "." && strings.HasPrefix(entry.Name(), "."), entry.Name() == "bin", entry.Name() == "testdata",
				relative == filepath.Join("api", "applyconfiguration"):
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasPrefix(entry.Name(), "zz_generated") {
			return nil
		}
		source, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, pattern := range handBuilt {
			if location := pattern.FindIndex(source); location != nil {
				line := 1 + strings.Count(string(source[:location[0]]), "\n")
				t.Errorf("%s:%d: a status patch built by hand (%s); build it from api/applyconfiguration and write it with internal/statusapply",
					relative, line, pattern)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
