package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Journal records the attempts in flight, so that after a crash the
// dispatcher knows which deliveries it was attempting when it died: a
// delivery that takes the process down every time (an input that exhausts
// its memory, say) is failed as poisoned instead of being attempted in a
// crash loop.
//
// Each attempt appends one line, "<delivery id> <attempt number>\n", to
// the file mapped in memory (shared): a copy, not a system call, on the
// path of every attempt. What a killed process copied is in the page
// cache, which the kernel writes back; only a crash of the whole machine
// loses it, as it would an unsynced write(2), and that costs only the count
// of that one interruption. A line "<delivery id> -" says the previous
// process's lines of that delivery are accounted for (Accounted). The file
// has a fixed size (journalSize), zeros
// after the last line; it is rewritten with the attempts still in flight,
// and the previous process's lines not accounted for yet, when a line
// would not fit.
type Journal struct {
	path string

	mu       sync.Mutex
	file     *os.File
	mapped   []byte
	size     int
	inFlight map[string]int
	// previous is what the journal held when it was opened, the attempts
	// in flight when the last process stopped, less those accounted for.
	previous map[string]int
}

// journalSize is the journal file's size: about 40,000 lines.
const journalSize = 1 << 20

// OpenJournal reads the journal at path, left by the previous process, and
// opens it for this one. Call Accounted as what it held is stored.
func OpenJournal(path string) (*Journal, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading the in-flight journal: %w", err)
	}
	lines := journalLines(data)
	j := &Journal{path: path, inFlight: map[string]int{}, previous: parseJournal(lines)}
	// The previous lines stay until accounted for; a journal from before the
	// mapping (appended to, up to a little over journalSize) is rewritten.
	if err := j.replace(lines); err != nil {
		return nil, err
	}
	return j, nil
}

// journalLines is the journal's complete lines: up to the first zero byte
// (the unused rest of the file), and up to the last newline (a line cut
// short by the process's death has none).
func journalLines(data []byte) []byte {
	if end := bytes.IndexByte(data, 0); end >= 0 {
		data = data[:end]
	}
	return data[:bytes.LastIndexByte(data, '\n')+1]
}

// accountedMark is the attempt number of a line that says a delivery's
// earlier lines are accounted for (Accounted).
const accountedMark = "-"

// parseJournal returns, per delivery, the highest attempt number started
// since the last line that said its lines were accounted for. A line that
// does not parse (torn by an earlier crash) is skipped.
func parseJournal(lines []byte) map[string]int {
	started := map[string]int{}
	for line := range bytes.Lines(lines) {
		id, number, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
		if ok && number == accountedMark {
			delete(started, id)
			continue
		}
		attempt, err := strconv.Atoi(number)
		if !ok || err != nil || id == "" {
			continue
		}
		started[id] = max(started[id], attempt)
	}
	return started
}

// Previous returns, per delivery, the highest attempt number that the
// previous process started and that is not accounted for yet.
func (j *Journal) Previous() map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return maps.Clone(j.previous)
}

// PreviousOf is Previous for the deliveries named: a page of them, read
// without a copy of the whole journal.
func (j *Journal) PreviousOf(deliveryIDs []string) map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string]int{}
	for _, id := range deliveryIDs {
		if attempt, ok := j.previous[id]; ok {
			out[id] = attempt
		}
	}
	return out
}

// Accounted drops the previous process's entries of deliveries whose
// interruption is stored (or that need none): a line "<delivery id> -"
// each, appended as an attempt's start is, so that a crash before the
// others are accounted for neither counts these twice nor loses those.
func (j *Journal) Accounted(deliveryIDs []string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, id := range deliveryIDs {
		if _, ok := j.previous[id]; !ok {
			continue
		}
		delete(j.previous, id)
		var buffer [128]byte
		if err := j.append(append(append(buffer[:0], id...), " "+accountedMark...)); err != nil {
			return err
		}
		// The mark ends this process's line of an attempt of the delivery
		// in flight too (a retry can start one before the take accounts
		// for it): the line comes again after it.
		if attempt, ok := j.inFlight[id]; ok {
			if err := j.append(inFlightLine(buffer[:0], id, attempt)); err != nil {
				return err
			}
		}
	}
	return nil
}

// inFlightLine appends the journal line of an attempt in flight, without
// its newline, to dst.
func inFlightLine(dst []byte, deliveryID string, attempt int) []byte {
	return strconv.AppendInt(append(append(dst, deliveryID...), ' '), int64(attempt), 10)
}

// Start records that attempt number of a delivery begins.
func (j *Journal) Start(deliveryID string, attempt int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.inFlight[deliveryID] = attempt
	// Built on the stack for the usual id lengths.
	var buffer [128]byte
	return j.append(inFlightLine(buffer[:0], deliveryID, attempt))
}

// append adds a line (without its newline) to the journal, or rewrites the
// journal when it would not fit: the rewrite holds what the line says, as
// the maps already do. Call with mu held.
func (j *Journal) append(line []byte) error {
	if j.size+len(line)+1 > len(j.mapped) {
		return j.rewrite()
	}
	// The newline last: a line cut short by the process's death has none,
	// and is not read.
	copy(j.mapped[j.size:], line)
	j.mapped[j.size+len(line)] = '\n'
	j.size += len(line) + 1
	return nil
}

// Done records that a delivery's attempt ended; it is left out of the next
// rewrite.
func (j *Journal) Done(deliveryID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.inFlight, deliveryID)
}

// rewrite replaces the journal with the previous process's entries not
// accounted for yet and the attempts in flight now.
func (j *Journal) rewrite() error {
	var lines []byte
	for _, entries := range []map[string]int{j.previous, j.inFlight} {
		for id, attempt := range entries {
			lines = fmt.Appendf(lines, "%s %d\n", id, attempt)
		}
	}
	return j.replace(lines)
}

// replace writes a new journal file holding lines, renames it over the old
// one and maps it in place of the old one's mapping.
func (j *Journal) replace(lines []byte) error {
	temporary := j.path + ".new"
	// Twice the lines at least, so that a rewrite leaves room to append.
	size := max(journalSize, 2*len(lines))
	file, err := os.OpenFile(temporary, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("rewriting the in-flight journal: %w", err)
	}
	mapped, err := mapJournal(file, lines, size)
	if err == nil {
		err = os.Rename(temporary, j.path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("rewriting the in-flight journal: %w", err), unmap(mapped), file.Close())
	}
	if err := j.unmapAndClose(); err != nil {
		return errors.Join(err, unmap(mapped), file.Close())
	}
	j.file, j.mapped, j.size = file, mapped, len(lines)
	return nil
}

// mapJournal sizes file, writes lines at its start and maps it.
func mapJournal(file *os.File, lines []byte, size int) ([]byte, error) {
	if _, err := file.Write(lines); err != nil {
		return nil, err
	}
	if err := file.Truncate(int64(size)); err != nil {
		return nil, err
	}
	return syscall.Mmap(int(file.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
}

func unmap(mapped []byte) error {
	if mapped == nil {
		return nil
	}
	return syscall.Munmap(mapped)
}

func (j *Journal) unmapAndClose() error {
	if j.file == nil {
		return nil
	}
	err := errors.Join(unmap(j.mapped), j.file.Close())
	j.file, j.mapped = nil, nil
	if err != nil {
		return fmt.Errorf("closing the in-flight journal: %w", err)
	}
	return nil
}

// Close unmaps and closes the journal file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.unmapAndClose()
}
