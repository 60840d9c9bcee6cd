package main

import (
	"strings"
	"testing"
)

func TestAddedToRefusesAChangedDefaultObject(t *testing.T) {
	role := func(verb string) object {
		return object{"kind": "Role", "metadata": map[string]any{"name": "r", "namespace": "n"},
			"rules": []any{map[string]any{"verbs": []any{verb}}}}
	}
	policy := object{"kind": kindNetworkPolicy, "metadata": map[string]any{"name": "p", "namespace": "n"}}
	added, err := addedTo([]object{role("get")}, []object{role("get"), policy}, "production")
	if err != nil || len(added) != 1 || added[0].name() != "p" {
		t.Fatalf("addedTo = %v, %v; want the NetworkPolicy alone", added, err)
	}
	if _, err := addedTo([]object{role("get")}, []object{role("list")}, "production"); err == nil ||
		!strings.Contains(err.Error(), "config/production changes config/default's Role r") {
		t.Fatalf("addedTo of a changed object: %v", err)
	}
}

func TestMarkers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    func(m *markers) string
		want    string
		wantErr string
	}{
		{
			name: "scalar in a string",
			yaml: func(m *markers) string { return "- --prefix=" + m.scalar(".Values.p") },
			want: "- --prefix={{ .Values.p }}",
		},
		{
			name: "value",
			yaml: func(m *markers) string { return "  resources: " + m.value(".Values.r") },
			want: "  resources:\n{{- toYaml (.Values.r) | nindent 4 }}",
		},
		{
			name: "lines as a list item",
			yaml: func(m *markers) string {
				return "  - a\n  - " + m.lines(func(indent int) string { return "{{- if .x }}\n- b\n{{- end }}" })
			},
			want: "  - a\n  {{- if .x }}\n  - b\n  {{- end }}",
		},
		{
			name:    "value that is a list item",
			yaml:    func(m *markers) string { return "- " + m.value(".Values.r") },
			wantErr: "not a map's value",
		},
		{
			name:    "lines inside a string",
			yaml:    func(m *markers) string { return "key: x" + m.lines(func(int) string { return "y" }) },
			wantErr: "neither a list item nor a map key",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &markers{}
			got, err := m.expand(tc.yaml(m))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("expand = %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("expand = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
