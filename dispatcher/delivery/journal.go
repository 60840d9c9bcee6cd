package delivery

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Journal records the attempts in flight, so that after a crash the
// dispatcher knows which deliveries it was attempting when it died: a
// delivery that takes the process down every time (an input that exhausts
// its memory, say) is failed as poisoned instead of being attempted in a
// crash loop.
//
// Each attempt appends one line, "<delivery id> <attempt number>", with one
// write(2) and no fsync: what a killed process wrote stays in the page
// cache, and only a crash of the whole machine loses it, which costs only
// the count of that one interruption. The file is rewritten with the
// attempts still in flight when it grows past compactAt.
type Journal struct {
	path string

	mu       sync.Mutex
	file     *os.File
	size     int64
	inFlight map[string]int
	// previous is what the journal held when it was opened: the attempts
	// in flight when the last process stopped.
	previous map[string]int
}

// compactAt is the journal size, in bytes, past which it is rewritten.
const compactAt = 1 << 20

// OpenJournal reads the journal at path, left by the previous process, and
// opens it for this one. Call Reset once what it held is stored.
func OpenJournal(path string) (*Journal, error) {
	previous, err := readJournal(path)
	if err != nil {
		return nil, err
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the in-flight journal: %w", err)
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("opening the in-flight journal: %w", err)
	}
	return &Journal{path: path, file: file, size: info.Size(), inFlight: map[string]int{}, previous: previous}, nil
}

// readJournal returns, per delivery, the highest attempt number started.
// A torn last line (the process died in the middle of a write) is skipped.
func readJournal(path string) (map[string]int, error) {
	started := map[string]int{}
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return started, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the in-flight journal: %w", err)
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		id, number, ok := strings.Cut(scanner.Text(), " ")
		attempt, err := strconv.Atoi(number)
		if !ok || err != nil || id == "" {
			continue
		}
		started[id] = max(started[id], attempt)
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading the in-flight journal %s: %w", path, err)
	}
	return started, nil
}

// Previous returns, per delivery, the highest attempt number that the
// previous process started.
func (j *Journal) Previous() map[string]int { return j.previous }

// Reset empties the journal once the previous process's entries are
// accounted for.
func (j *Journal) Reset() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.previous = map[string]int{}
	return j.rewrite()
}

// Start records that attempt number of a delivery begins.
func (j *Journal) Start(deliveryID string, attempt int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.inFlight[deliveryID] = attempt
	if j.size > compactAt {
		return j.rewrite()
	}
	return j.append(deliveryID, attempt)
}

// Done records that a delivery's attempt ended; it is left out of the next
// rewrite.
func (j *Journal) Done(deliveryID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.inFlight, deliveryID)
}

func (j *Journal) append(deliveryID string, attempt int) error {
	// Built on the stack for the usual id lengths.
	var buffer [128]byte
	line := strconv.AppendInt(append(append(buffer[:0], deliveryID...), ' '), int64(attempt), 10)
	n, err := j.file.Write(append(line, '\n'))
	j.size += int64(n)
	if err != nil {
		return fmt.Errorf("writing the in-flight journal: %w", err)
	}
	return nil
}

// rewrite replaces the journal with the attempts in flight now: written to
// a new file, renamed over the old one.
func (j *Journal) rewrite() error {
	var lines strings.Builder
	for id, attempt := range j.inFlight {
		fmt.Fprintf(&lines, "%s %d\n", id, attempt)
	}
	temporary := j.path + ".new"
	if err := os.WriteFile(temporary, []byte(lines.String()), 0o600); err != nil {
		return fmt.Errorf("rewriting the in-flight journal: %w", err)
	}
	if err := os.Rename(temporary, j.path); err != nil {
		return fmt.Errorf("rewriting the in-flight journal: %w", err)
	}
	file, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reopening the in-flight journal: %w", err)
	}
	j.file.Close()
	j.file, j.size = file, int64(lines.Len())
	return nil
}

// Close closes the journal file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.file.Close()
}
