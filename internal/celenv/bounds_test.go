package celenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// bomb multiplies event.type by about 200, 200 and 4,000 with empty-pattern
// replaces: on "user.created" the first two build half a MiB within the
// run-time cost limit, and the third would build 2 GiB in one call.
var bomb = fmt.Sprintf(`{"x": event.type.replace('', '%s').replace('', '%s').replace('', '%s')}`,
	strings.Repeat("x", 200), strings.Repeat("x", 200), strings.Repeat("x", 4000))

func TestBombIsShort(t *testing.T) {
	if len(bomb) >= 5000 {
		t.Fatalf("bomb is %d characters, want under 5,000", len(bomb))
	}
}

func TestCompileRefusesOverBudget(t *testing.T) {
	filterBomb := fmt.Sprintf(`event.data.s.replace('', '%s').size() > 0`, strings.Repeat("y", 100))
	for name, compileFn := range map[string]func() error{
		"transform bomb": func() error { _, err := CompileTransform(bomb); return err },
		"filter":         func() error { _, err := CompileFilter(filterBomb); return err },
		"transform comprehension": func() error {
			_, err := CompileTransform(`{"x": event.data.items.map(i, event.data.items.map(j, i + j))}`)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := compileFn()
			if err == nil || !strings.Contains(err.Error(), "estimated cost") || !strings.Contains(err.Error(), fmt.Sprintf("budget of %d CEL cost units", MaxEstimatedCost)) {
				t.Fatalf("compile error = %v, want the estimated cost and the budget", err)
			}
		})
	}
}

// TestSamplesAndOrdinaryExpressionsCompile keeps the budget from refusing
// what users write: the samples' transforms and filters, and common forms.
func TestSamplesAndOrdinaryExpressionsCompile(t *testing.T) {
	transforms := []string{
		`{"webhook_url": endpoint.url, "data": {"user_id": event.data.user_id, "webhook_action": event.type}}`,
		`{"name": event.data.name.lowerAscii(), "tags": event.data.tags.join(","), "text": event.data.note.replace("\n", " ")}`,
		`{"id": event.id, "skus": event.data.items.map(i, i.sku)}`,
		`{"encoded": base64.encode(bytes(event.type)), "at": event.created_at, "ns": endpoint.namespace}`,
	}
	filters := []string{
		`event.data.platform == "uber"`,
		`event.type.startsWith("login.") && !event.sandbox`,
		`event.data.amount > 100 && event.data.currency in ["USD", "EUR"]`,
		`event.data.items.exists(i, i.sku == "A-1")`,
		`event.data.email.endsWith("@example.com")`,
	}
	samples, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(samples) == 0 {
		t.Fatalf("samples: %v (%d files)", err, len(samples))
	}
	for _, path := range samples {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for document := range strings.SplitSeq(string(data), "\n---") {
			var object struct {
				Spec struct {
					Filter  string `json:"filter"`
					Payload struct {
						Transform string `json:"transform"`
					} `json:"payload"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(document), &object); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if object.Spec.Payload.Transform != "" {
				transforms = append(transforms, object.Spec.Payload.Transform)
			}
			if object.Spec.Filter != "" {
				filters = append(filters, object.Spec.Filter)
			}
		}
	}
	for _, expression := range transforms {
		if _, err := CompileTransform(expression); err != nil {
			t.Errorf("CompileTransform(%s): %v", expression, err)
		}
	}
	for _, expression := range filters {
		if _, err := CompileFilter(expression); err != nil {
			t.Errorf("CompileFilter(%s): %v", expression, err)
		}
	}
}

// allocatedDuring reports how many bytes fn allocated on the heap.
func allocatedDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestBombAtRunTimeIsRefusedBeforeAllocating evaluates the bomb as the
// dispatcher would if a route bypassed admission: the third replace is
// refused before it builds its 2 GiB, and the evaluation allocates little.
func TestBombAtRunTimeIsRefusedBeforeAllocating(t *testing.T) {
	transform, err := LoadTransform(bomb)
	if err != nil {
		t.Fatalf("LoadTransform: %v", err)
	}
	event := map[string]any{"type": "user.created", "data": map[string]any{}}
	var body []byte
	allocated := allocatedDuring(func() {
		body, err = transform.Body(event, map[string]any{"url": "https://example.com/"})
	})
	if err == nil {
		t.Fatalf("Body of the bomb = %d bytes, want an error", len(body))
	}
	// The size the refused call would have built: 2,101,377,012 bytes.
	want := fmt.Sprintf("replace would build a string of %d bytes or more, over the limit of %d", 525212+525213*4000, MaxStringBytes)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Body error = %v, want %q", err, want)
	}
	if allocated > 64<<20 {
		t.Fatalf("the refused evaluation allocated %d bytes, want under 64 MiB", allocated)
	}
}

func TestRunTimeSizeBounds(t *testing.T) {
	large := strings.Repeat("a", 300<<10)
	event := map[string]any{"type": "t", "data": map[string]any{"s": large, "short": "ab"}}
	endpoint := map[string]any{"url": "https://example.com/"}
	cases := []struct {
		name, expression, wantErr string
	}{
		{"replace", `{"x": event.data.s.replace('a', 'bbbb')}`, "replace would build a string of 1228800 bytes"},
		{"replace with a count", `{"x": event.data.s.replace('a', 'bbbbbb', 200000)}`, "replace would build a string of 1307200 bytes"},
		{"join", `{"x": [event.data.s, event.data.s, event.data.s, event.data.s].join()}`, "join would build a string of 1228800 bytes"},
		{"join with a separator", `{"x": [event.data.s, event.data.s, event.data.short].join(event.data.s)}`, "join would build a string of 1228800 bytes or more"},
		{"format", `{"x": '%s%s'.format([event.data.s, event.data.s])}`, "format would build a string of"},
		{"result", `{"x": [event.data.s, event.data.s, event.data.s, event.data.s]}`, "transform result is over the limit of 1048576 bytes"},
		{"result JSON", `{"x": [event.data.s, event.data.s, event.data.s.replace('a', '\n')]}`, "transform result is 1228816 bytes of JSON, over the limit of 1048576"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			transform, err := LoadTransform(tc.expression)
			if err != nil {
				t.Fatalf("LoadTransform: %v", err)
			}
			body, err := transform.Body(event, endpoint)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Body: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Body = %d bytes, %v; want an error containing %q", len(body), err, tc.wantErr)
			}
		})
	}
	// Within the bounds, the same functions work.
	transform, err := LoadTransform(`{"x": event.data.short.replace('', '-'), "y": [event.data.short, 'c'].join('+'), "z": '%s!'.format([event.data.short])}`)
	if err != nil {
		t.Fatal(err)
	}
	body, err := transform.Body(event, endpoint)
	if err != nil || string(body) != `{"x":"-a-b-","y":"ab+c","z":"ab!"}` {
		t.Fatalf("Body = %s, %v", body, err)
	}
}

func TestEvaluationStopsAtItsDeadline(t *testing.T) {
	transform, err := LoadTransform(`{"x": lists.range(10000).map(i, i * 2)}`)
	if err != nil {
		t.Fatal(err)
	}
	// A deadline long past: the evaluation is interrupted at its first check.
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	if _, err := transform.apply(ctx, map[string]any{}, map[string]any{}); err == nil || !strings.Contains(err.Error(), "evaluation took longer than") {
		t.Fatalf("apply after the deadline: %v, want an interrupted evaluation", err)
	}
	filter, err := LoadFilter(`lists.range(10000).exists(i, i < 0)`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := filter.match(ctx, map[string]any{}); err == nil || !strings.Contains(err.Error(), "evaluation took longer than") {
		t.Fatalf("match after the deadline: %v, want an interrupted evaluation", err)
	}
}

func TestRunTimeCostLimit(t *testing.T) {
	// Each lowerAscii of 300 KiB costs about 330,000.
	transform, err := LoadTransform(`{"x": [event.data.s.lowerAscii(), event.data.s.lowerAscii(), event.data.s.lowerAscii(), event.data.s.lowerAscii()].size()}`)
	if err != nil {
		t.Fatal(err)
	}
	event := map[string]any{"data": map[string]any{"s": strings.Repeat("A", 300<<10)}}
	if _, err := transform.Apply(event, map[string]any{}); err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Fatalf("Apply of an expensive transform: %v, want the cost limit", err)
	}
}
