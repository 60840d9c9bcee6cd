package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: Linux fixes it at
// 100 a second for user space, whatever the kernel's tick.
const userHZ = 100

// errNoProcFS says the CPU times cannot be read here (not Linux).
var errNoProcFS = errors.New("no /proc/<pid>/stat")

// processesCPU is the CPU time, user and system, that the processes pids
// (all of their threads) have used so far.
func processesCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			if _, statErr := os.Stat("/proc/self/stat"); statErr != nil {
				return 0, errNoProcFS
			}
		}
		if err != nil {
			return 0, err
		}
		ticks, err := statTicks(string(stat))
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += time.Duration(ticks) * time.Second / userHZ
	}
	return total, nil
}

// statTicks adds utime and stime, the 14th and 15th fields of a
// /proc/<pid>/stat line. The fields are counted after the command name,
// which is in parentheses and may itself hold spaces.
func statTicks(stat string) (int64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	// After ") ": state is field 3, so utime (14) and stime (15) are the
	// 12th and 13th from there.
	fields := strings.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	var sum int64
	for _, field := range fields[11:13] {
		ticks, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", field, err)
		}
		sum += ticks
	}
	return sum, nil
}

// settleQuiet, settlePoll and settleAtMost define a quiet process: one
// that used at most settleQuiet of CPU in the last settlePoll; settle
// waits at most settleAtMost for that.
const (
	settleQuiet  = 10 * time.Millisecond
	settlePoll   = 200 * time.Millisecond
	settleAtMost = 10 * time.Second
)

// settle waits until the processes pids are quiet together, so that the
// work a run leaves behind (a store's flush and compactions, the last
// attempt records, a garbage collection) is not measured with the next
// run, whichever process that is. It gives up after settleAtMost and says
// so on stderr.
func settle(pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	before, err := processesCPU(pids)
	if errors.Is(err, errNoProcFS) {
		return nil
	}
	if err != nil {
		return err
	}
	for waited := time.Duration(0); waited < settleAtMost; waited += settlePoll {
		time.Sleep(settlePoll)
		after, err := processesCPU(pids)
		if err != nil {
			return err
		}
		if after-before <= settleQuiet {
			return nil
		}
		before = after
	}
	fmt.Fprintf(os.Stderr, "bench: the measured processes were still busy %s after a run; measuring on\n", settleAtMost)
	return nil
}
