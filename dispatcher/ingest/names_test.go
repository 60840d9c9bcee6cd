package ingest

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The patterns the validators in names.go stand for.
var (
	namespacePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	typePattern      = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	idPattern        = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)
)

// nameAlphabet holds a byte of each class the patterns tell apart, and
// bytes next to the classes' edges, so that short strings over it reach
// every branch of the validators.
const nameAlphabet = "az09AZ-_.:/@`{[ \n\x00\xff" + "é"

func TestValidatorsMatchPatterns(t *testing.T) {
	validators := []struct {
		name    string
		valid   func(string) bool
		pattern *regexp.Regexp
	}{
		{"namespace", validNamespace, namespacePattern},
		{"type", validType, typePattern},
		{"id", validID, idPattern},
	}
	check := func(s string) {
		for _, v := range validators {
			if got, want := v.valid(s), v.pattern.MatchString(s); got != want {
				t.Fatalf("%s validator says %v for %q, the pattern %v", v.name, got, s, want)
			}
		}
	}
	// Every string of up to three bytes over the alphabet.
	var every func(prefix string, depth int)
	every = func(prefix string, depth int) {
		check(prefix)
		if depth == 0 {
			return
		}
		for i := range len(nameAlphabet) {
			every(prefix+nameAlphabet[i:i+1], depth-1)
		}
	}
	every("", 3)
	// Random strings around the length limits (63, 253, 255), mostly of
	// valid bytes so that long ones are not all refused at their first.
	random := rand.New(rand.NewPCG(1, 2))
	valid := "abcxyz0189ABZ-_.:"
	for range 100_000 {
		length := random.IntN(300)
		if random.IntN(2) == 0 {
			length = []int{62, 63, 64, 254, 255, 256}[random.IntN(6)]
		}
		var b strings.Builder
		for range length {
			if random.IntN(200) == 0 {
				b.WriteByte(nameAlphabet[random.IntN(len(nameAlphabet))])
			} else {
				b.WriteByte(valid[random.IntN(len(valid))])
			}
		}
		check(b.String())
		check(strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(b.String(), "_", "-"), ".", "")))
	}
}
