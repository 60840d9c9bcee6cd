package routes

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// FuzzJSONStringLen: the size of an entry's value in a ConfigMap is
// exactly what encoding/json writes for it, whatever the bytes.
func FuzzJSONStringLen(f *testing.F) {
	for _, seed := range []string{"", `{"url":"https://a.example/x?a=1&b=<2>"}`, "\b\f\n\r\t\x00\x1f\"\\", "\u2028\u2029é漢🙂", "\xff\xfe\xc3", "\xe2\x80"} {
		f.Add([]byte(seed))
	}
	random := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, random.IntN(64))
		for i := range b {
			b[i] = byte(random.UintN(256))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		encoded, err := json.Marshal(string(value))
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonStringLen(value); got != len(encoded) {
			t.Errorf("jsonStringLen(%q) = %d, json.Marshal wrote %d bytes: %s", value, got, len(encoded), encoded)
		}
	})
}
