package routes

import (
	"testing"
)

func TestTypeMatches(t *testing.T) {
	cases := []struct {
		pattern, eventType string
		want               bool
	}{
		{"*", "anything.at.all", true},
		{"business.*", "business.filing.due", true},
		{"business.*", "business", false},
		{"business.*", "businesses.created", false},
		{"user.created", "user.created", true},
		{"user.created", "user.created.v2", false},
	}
	for _, tc := range cases {
		if got := TypeMatches(tc.pattern, tc.eventType); got != tc.want {
			t.Errorf("TypeMatches(%q, %q) = %v, want %v", tc.pattern, tc.eventType, got, tc.want)
		}
	}
}

func TestMatchFansOutOncePerEndpoint(t *testing.T) {
	keys := []Key{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
	entry := func(name string, sandbox bool, subscriptions ...Subscription) ([]byte, []byte) {
		route, _ := EncodeEndpoint(Endpoint{Namespace: "ns", Name: name, Sandbox: sandbox, KeysVersion: KeysVersion(keys), Subscriptions: subscriptions})
		encodedKeys, _ := EncodeKeys(KeysEntry{Keys: keys})
		return route, encodedKeys
	}
	routeEntries, keyEntries := map[string][]byte{}, map[string][]byte{}
	for _, e := range []struct {
		name    string
		sandbox bool
		subs    []Subscription
	}{
		{"both", false, []Subscription{{Name: "a", EventTypes: []string{"login.*"}}, {Name: "b", EventTypes: []string{"*"}}}},
		{"uber-only", false, []Subscription{{Name: "c", EventTypes: []string{"login.*"}, Filter: `event.data.platform == "uber"`}}},
		{"sandbox", true, []Subscription{{Name: "d", EventTypes: []string{"*"}}}},
	} {
		routeEntries[EntryKey("ns", e.name)], keyEntries[EntryKey("ns", e.name)] = entry(e.name, e.sandbox, e.subs...)
	}
	table, problems := Build(routeEntries, keyEntries)
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	names := func(endpoints []*Route) []string {
		var out []string
		for _, e := range endpoints {
			out = append(out, e.Name)
		}
		return out
	}
	didi := func() map[string]any { return map[string]any{"data": map[string]any{"platform": "didi"}} }
	uber := func() map[string]any { return map[string]any{"data": map[string]any{"platform": "uber"}} }
	if got := names(table.Match("ns", "login.success", false, didi)); len(got) != 1 || got[0] != "both" {
		t.Errorf("production didi login went to %v, want [both]", got)
	}
	if got := names(table.Match("ns", "login.success", false, uber)); len(got) != 2 {
		t.Errorf("production uber login went to %v, want both and uber-only", got)
	}
	if got := names(table.Match("ns", "login.success", true, uber)); len(got) != 1 || got[0] != "sandbox" {
		t.Errorf("sandbox login went to %v, want [sandbox]", got)
	}
	if got := names(table.Match("other", "login.success", false, uber)); len(got) != 0 {
		t.Errorf("a namespace without endpoints matched %v", got)
	}
}
