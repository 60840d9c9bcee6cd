// Package proc reads and stops the processes the scale targets measure.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
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

// RuntimeEnv is the Go runtime's settings (GOMEMLIMIT, GOGC) that the
// workload (a Deployment or StatefulSet) in the first YAML document of path
// gives container, as NAME=value: the binary runs here as it runs in a
// cluster.
func RuntimeEnv(path, container string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	first, _, _ := strings.Cut(string(data), "\n---\n")
	var workload struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(first), &workload); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range workload.Spec.Template.Spec.Containers {
		if c.Name != container {
			continue
		}
		var env []string
		for _, v := range c.Env {
			if v.Name == "GOMEMLIMIT" || v.Name == "GOGC" {
				env = append(env, v.Name+"="+v.Value)
			}
		}
		return env, nil
	}
	return nil, fmt.Errorf("%s: no container %q", path, container)
}
