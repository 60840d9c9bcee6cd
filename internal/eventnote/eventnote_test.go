package eventnote

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFit(t *testing.T) {
	cases := []struct {
		name, note string
		want       string // empty: check the cut form
	}{
		{name: "short", note: "disabled after 10 failures", want: "disabled after 10 failures"},
		{name: "exactly the limit", note: strings.Repeat("a", MaxBytes), want: strings.Repeat("a", MaxBytes)},
		{name: "one byte over", note: strings.Repeat("a", MaxBytes+1)},
		{name: "long ASCII", note: strings.Repeat("a", 5000)},
		// 'é' is two bytes, '€' three, '𝄞' four: the cut must not split one.
		{name: "two-byte runes", note: strings.Repeat("é", 1000)},
		{name: "three-byte runes", note: "x" + strings.Repeat("€", 1000)},
		{name: "four-byte runes", note: "xy" + strings.Repeat("𝄞", 1000)},
	}
	for _, tc := range cases {
		got := Fit(tc.note)
		if tc.want != "" {
			if got != tc.want {
				t.Errorf("%s: Fit changed a note that fits", tc.name)
			}
			continue
		}
		switch {
		case len(got) > MaxBytes:
			t.Errorf("%s: %d bytes, want at most %d", tc.name, len(got), MaxBytes)
		case len(got) < MaxBytes-len(ellipsis)-3:
			t.Errorf("%s: %d bytes, cut more than a character short of the limit", tc.name, len(got))
		case !utf8.ValidString(got):
			t.Errorf("%s: cut inside a character", tc.name)
		case !strings.HasSuffix(got, ellipsis) || !strings.HasPrefix(tc.note, strings.TrimSuffix(got, ellipsis)):
			t.Errorf("%s: %q is not a prefix of the note and an ellipsis", tc.name, got)
		}
	}
}
