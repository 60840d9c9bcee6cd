package main

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
)

// profiler takes CPU and allocation profiles of dispatchers, over one run
// each, from their pprof listeners, and writes them to dir.
type profiler struct {
	dir    string
	client *http.Client
}

// newProfiler writes profiles to dir, or to a new temporary folder when dir
// is empty.
func newProfiler(dir string) (*profiler, error) {
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "hookrelay-bench-profiles-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("the profiles' folder: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: profiles go to %s\n", dir)
	return &profiler{dir: dir, client: &http.Client{Timeout: time.Minute}}, nil
}

// capture is the profiling of one run, on each of a dispatcher's replicas.
type capture struct {
	p         *profiler
	addresses []string
	before    []*profile.Profile
	stop      chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	cpu       []*profile.Profile
	err       error
}

// cpuWindow is the length of each CPU profile: a run is covered by
// back-to-back windows, since a CPU profile's length is fixed when it
// starts; the last window outlasts the run by less than this, idle.
const cpuWindow = "1"

// profilerFrames are the functions of the profiler in the dispatcher.
var profilerFrames = regexp.MustCompile(`^(runtime/pprof|net/http/pprof)\.`)

// start snapshots the allocations so far and starts CPU profiling windows.
func (p *profiler) start(addresses []string) (*capture, error) {
	c := &capture{p: p, addresses: addresses, stop: make(chan struct{})}
	for _, address := range addresses {
		// gc=1: the allocation profile is as of the last GC, so one runs first.
		before, err := p.fetch(address, "allocs?gc=1")
		if err != nil {
			return nil, err
		}
		c.before = append(c.before, before)
	}
	for _, address := range addresses {
		c.wg.Go(func() {
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				window, err := p.fetch(address, "profile?seconds="+cpuWindow)
				c.mu.Lock()
				if err != nil {
					c.err = cmp.Or(c.err, err)
				} else {
					c.cpu = append(c.cpu, window)
				}
				c.mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	return c, nil
}

// finish ends the profiling and writes name.cpu.pb.gz and
// name.allocs.pb.gz, the allocations made since start.
func (c *capture) finish(name string) (cpu, allocs *profile.Profile, err error) {
	close(c.stop)
	c.wg.Wait()
	if c.err != nil {
		return nil, nil, c.err
	}
	deltas := make([]*profile.Profile, 0, 2*len(c.addresses))
	for i, address := range c.addresses {
		after, err := c.p.fetch(address, "allocs?gc=1")
		if err != nil {
			return nil, nil, err
		}
		c.before[i].Scale(-1)
		deltas = append(deltas, c.before[i], after)
	}
	if allocs, err = profile.Merge(deltas); err != nil {
		return nil, nil, fmt.Errorf("allocation profiles of %s: %w", name, err)
	}
	allocs.Sample = slices.DeleteFunc(allocs.Sample, func(s *profile.Sample) bool {
		return !slices.ContainsFunc(s.Value, func(v int64) bool { return v != 0 })
	})
	if cpu, err = profile.Merge(c.cpu); err != nil {
		return nil, nil, fmt.Errorf("CPU profiles of %s: %w", name, err)
	}
	// The profiling's own work (writing each CPU window) is the bench's,
	// not the dispatcher's.
	cpu.FilterSamplesByName(nil, profilerFrames, nil, nil)
	allocs.FilterSamplesByName(nil, profilerFrames, nil, nil)
	for kind, p := range map[string]*profile.Profile{"cpu": cpu, "allocs": allocs} {
		if err := writeProfile(filepath.Join(c.p.dir, name+"."+kind+".pb.gz"), p); err != nil {
			return nil, nil, err
		}
	}
	return cpu, allocs, nil
}

func writeProfile(path string, p *profile.Profile) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := p.Write(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// fetch reads one profile from a pprof listener.
func (p *profiler) fetch(address, query string) (*profile.Profile, error) {
	request, err := http.NewRequest(http.MethodGet, "http://"+address+"/debug/pprof/"+query, nil)
	if err != nil {
		return nil, err
	}
	body, err := readOK(p.client, request)
	if err != nil {
		return nil, err
	}
	parsed, err := profile.ParseData(body)
	if err != nil {
		return nil, fmt.Errorf("%s/debug/pprof/%s: %w", address, query, err)
	}
	return parsed, nil
}

// group is a part of the dispatcher's work, known by the functions that do it.
type group struct {
	name     string
	prefixes []string
}

// groups are matched on each sample's stack from the innermost frame out:
// the first frame that names a group takes the whole sample, so each sample
// counts once (JSON encoding inside the store counts as JSON, an
// allocation inside signing as GC/alloc).
var groups = []group{
	{allocGroup, []string{"runtime.mallocgc", "runtime.gc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.markroot", "runtime.scanobject",
		"runtime.newobject", "runtime.makeslice", "runtime.growslice", "runtime.makemap"}},
	{"JSON", []string{"encoding/json."}},
	{"signing", []string{"github.com/hookrelay/hookrelay/dispatcher/signing.", "crypto/hmac."}},
	{"store", []string{"github.com/hookrelay/hookrelay/dispatcher/store.", "go.etcd.io/bbolt.", "github.com/cockroachdb/pebble", "github.com/jackc/"}},
	{"HTTP out/attempt", []string{"github.com/hookrelay/hookrelay/dispatcher/delivery.(*Attempter)", "net/http.(*Transport)",
		"net/http.(*persistConn)", "net/http.persistConnWriter", "net/http.(*Client)", "net/http.send"}},
	{"HTTP in", []string{"github.com/hookrelay/hookrelay/dispatcher/ingest.", "net/http.(*conn)", "net/http.(*connReader)",
		"net/http.(*response)", "net/http.serverHandler", "net/http.(*ServeMux)"}},
	{"engine", []string{"github.com/hookrelay/hookrelay/dispatcher/delivery.", "github.com/hookrelay/hookrelay/internal/routes."}},
}

// allocGroup is the runtime's allocation and garbage collection, left out
// of allocation profiles (where every sample is an allocation).
const allocGroup = "GC/alloc"

// otherGroup takes the samples no group names: the scheduler, the
// network poller, timers.
const otherGroup = "other"

// groupOf is the group of a sample's stack; withAlloc false skips GC/alloc
// (in an allocation profile every sample is an allocation).
func groupOf(s *profile.Sample, withAlloc bool) string {
	for _, location := range s.Location {
		for _, line := range location.Line {
			if line.Function == nil {
				continue
			}
			for _, g := range groups {
				if !withAlloc && g.name == allocGroup {
					continue
				}
				for _, prefix := range g.prefixes {
					if strings.HasPrefix(line.Function.Name, prefix) {
						return g.name
					}
				}
			}
		}
	}
	return otherGroup
}

// valueIndex is the index of the sample type named typ, or the last.
func valueIndex(p *profile.Profile, typ string) int {
	for i, st := range p.SampleType {
		if st.Type == typ {
			return i
		}
	}
	return len(p.SampleType) - 1
}

// breakdown sums a profile's values of one type by group, by innermost
// function (flat) and by every function on the stack (cumulative).
type breakdown struct {
	total      int64
	byGroup    map[string]int64
	flat, cumu map[string]int64
}

func breakDown(p *profile.Profile, typ string, withAlloc bool) breakdown {
	index := valueIndex(p, typ)
	b := breakdown{byGroup: map[string]int64{}, flat: map[string]int64{}, cumu: map[string]int64{}}
	for _, s := range p.Sample {
		value := s.Value[index]
		b.total += value
		b.byGroup[groupOf(s, withAlloc)] += value
		seen := map[string]bool{}
		for i, location := range s.Location {
			for j, line := range location.Line {
				if line.Function == nil {
					continue
				}
				name := line.Function.Name
				if i == 0 && j == 0 {
					b.flat[name] += value
				}
				if !seen[name] {
					seen[name] = true
					b.cumu[name] += value
				}
			}
		}
	}
	return b
}

// groupOrder is the order groups are printed in: the store first, then
// the request's way through the dispatcher.
var groupOrder = []string{"store", "HTTP in", "engine", "HTTP out/attempt", "signing", "JSON", allocGroup, otherGroup}

// groupLine is "store 33.1%, HTTP in 20.2%, …", in the groups' order.
func (b breakdown) groupLine(withAlloc bool) string {
	var parts []string
	for _, name := range groupOrder {
		if !withAlloc && name == allocGroup {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%%", name, b.percent(b.byGroup[name])))
	}
	return strings.Join(parts, ", ")
}

func (b breakdown) percent(value int64) float64 {
	if b.total == 0 {
		return 0
	}
	return 100 * float64(value) / float64(b.total)
}

// top is the n functions of most value in byFunction, most first.
func top(byFunction map[string]int64, n int) []string {
	names := make([]string, 0, len(byFunction))
	for name := range byFunction {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(byFunction[b], byFunction[a]), cmp.Compare(a, b)) })
	return names[:min(n, len(names))]
}

// topFunctions is how many functions each top list shows.
const topFunctions = 12

// printProfiles says where one run's time and allocations went: CPU and
// allocations per event, the groups, and the top functions by cumulative
// and flat CPU.
func printProfiles(w io.Writer, name string, events int, elapsed time.Duration, cpu, allocs *profile.Profile) {
	cpuTime := breakDown(cpu, "cpu", true)
	space := breakDown(allocs, "alloc_space", false)
	objects := breakDown(allocs, "alloc_objects", false)
	perEvent := func(v int64) float64 { return float64(v) / float64(max(events, 1)) }
	fmt.Fprintf(w, "%s: %.2fs CPU in %.2fs (%.2f cores), %.0fµs CPU and %.0f allocations (%.1f KiB) per event\n", name,
		time.Duration(cpuTime.total).Seconds(), elapsed.Seconds(), float64(cpuTime.total)/float64(elapsed),
		perEvent(cpuTime.total)/1e3, perEvent(objects.total), perEvent(space.total)/1024)
	fmt.Fprintf(w, "  CPU by group:         %s\n", cpuTime.groupLine(true))
	fmt.Fprintf(w, "  allocations by group: %s (bytes)\n", space.groupLine(false))
	fmt.Fprintf(w, "  %-62s %s\n", "top by cumulative CPU", "top by flat CPU")
	cumulative, flat := top(cpuTime.cumu, topFunctions), top(cpuTime.flat, topFunctions)
	for i := range max(len(cumulative), len(flat)) {
		left, right := "", ""
		if i < len(cumulative) {
			left = fmt.Sprintf("%5.1f%% %s", cpuTime.percent(cpuTime.cumu[cumulative[i]]), shortName(cumulative[i], 54))
		}
		if i < len(flat) {
			right = fmt.Sprintf("%5.1f%% %s", cpuTime.percent(cpuTime.flat[flat[i]]), shortName(flat[i], 54))
		}
		fmt.Fprintf(w, "  %-62s %s\n", left, right)
	}
}

// shortName drops the module path of the dispatcher's own functions and
// cuts a name to width.
func shortName(name string, width int) string {
	name = strings.TrimPrefix(name, "github.com/hookrelay/hookrelay/")
	if len(name) > width {
		return name[:width-1] + "…"
	}
	return name
}
