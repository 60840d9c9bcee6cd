// Package proc reads and stops the processes the scale targets measure.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Status is /proc/<pid>/status, field name to value (such as "VmRSS" to
// "235604 kB").
func Status(pid int) (map[string]string, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(string(status), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok {
			fields[name] = strings.TrimSpace(value)
		}
	}
	return fields, nil
}

// Stop sends SIGTERM to a process and waits until exited is closed.
func Stop(process *os.Process, exited <-chan struct{}) error {
	err := process.Signal(syscall.SIGTERM)
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	<-exited
	return err
}
