package celenv

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCompileFilter(t *testing.T) {
	event := map[string]any{"type": "login.success", "data": map[string]any{"platform": "uber"}}
	cases := []struct {
		expression string
		wantErr    string
		want       bool
	}{
		{expression: `event.data.platform == "uber"`, want: true},
		{expression: `event.data.platform == "didi"`, want: false},
		{expression: `event.type.startsWith("login.")`, want: true},
		{expression: `event.data.platform ==`, wantErr: "Syntax error"},
		{expression: `event.data.platform`, want: false, wantErr: ""},
		{expression: `"uber"`, wantErr: "want bool"},
	}
	for _, tc := range cases {
		t.Run(tc.expression, func(t *testing.T) {
			filter, err := CompileFilter(tc.expression)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("CompileFilter error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CompileFilter: %v", err)
			}
			got, err := filter.Match(event)
			if tc.expression == `event.data.platform` {
				// dyn compiles, but a string result is an evaluation error.
				if err == nil {
					t.Fatalf("Match of a string expression succeeded with %v", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Match = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestTransformBuildsPalencaBody(t *testing.T) {
	transform, err := CompileTransform(`{"webhook_url": endpoint.url, "data": {
		"user_id": event.data.user_id, "platform": event.data.platform,
		"status_details": event.data.?status_details.orValue(null),
		"webhook_action": event.type}}`)
	if err != nil {
		t.Fatalf("CompileTransform: %v", err)
	}
	body, err := transform.Apply(
		map[string]any{"type": "login.created", "data": map[string]any{"user_id": "u1", "platform": "uber"}},
		map[string]any{"url": "https://example.com/hook"},
	)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"data":{"platform":"uber","status_details":null,"user_id":"u1","webhook_action":"login.created"},"webhook_url":"https://example.com/hook"}`
	if string(got) != want {
		t.Fatalf("body = %s\nwant   %s", got, want)
	}
}

func TestCompileTransformRefusesScalar(t *testing.T) {
	if _, err := CompileTransform(`"plain " + "text"`); err == nil || !strings.Contains(err.Error(), "want map or list") {
		t.Fatalf("CompileTransform of a string error = %v, want a type error", err)
	}
}
