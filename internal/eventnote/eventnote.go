// Package eventnote fits the note of a Kubernetes Event to what the API
// server accepts. A longer note makes the API server refuse the whole Event,
// and a warning such as AutoDisabled would be lost; both the controllers and
// the dispatcher record Events through Fit.
package eventnote

import "unicode/utf8"

// MaxBytes is the API server's limit on an Event's note (events.k8s.io/v1
// note, core/v1 message): NoteLengthLimit in k8s.io/kubernetes, which is not
// importable as a library.
const MaxBytes = 1024

// ellipsis marks a note that was cut.
const ellipsis = "…"

// Fit returns note unchanged if it fits in MaxBytes, or else its longest
// prefix that ends on a UTF-8 character boundary and, with an ellipsis
// appended, fits.
func Fit(note string) string {
	if len(note) <= MaxBytes {
		return note
	}
	end := MaxBytes - len(ellipsis)
	for end > 0 && !utf8.RuneStart(note[end]) {
		end--
	}
	return note[:end] + ellipsis
}
