package main

import (
	"slices"
	"testing"

	"github.com/vpcnet/vpcnet/internal/task"
)

func TestDetachedOutcome(t *testing.T) {
	for _, tc := range []struct {
		name          string
		r             task.Record
		started, done bool
	}{
		{"still starting", task.Record{State: task.StateStarting}, false, false},
		{"running", task.Record{State: task.StateRunning}, true, true},
		// A command that exits at once is stopping or stopped by the time
		// `run --detach` looks: it ran all the same.
		{"already stopping", task.Record{State: task.StateStopping}, true, true},
		{"already stopped", task.Record{State: task.StateStopped}, true, true},
		{"failed", task.Record{State: task.StateFailed, Error: "attach-eni: no"}, false, true},
		// A failed launch whose release failed too stays "stopping".
		{"failed, release incomplete", task.Record{State: task.StateStopping, Error: "attach-eni: no"}, false, true},
	} {
		started, done := detachedOutcome(tc.r)
		if started != tc.started || done != tc.done {
			t.Errorf("%s: detachedOutcome = %v, %v; want %v, %v", tc.name, started, done, tc.started, tc.done)
		}
	}
}

func TestReplaceInstance(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"flag and value", []string{"task", "run", "--instance", "1", "--subnet", "s"}, []string{"task", "run", "--instance", "i-9", "--subnet", "s"}},
		{"flag=value", []string{"task", "run", "--instance=1", "--", "x"}, []string{"task", "run", "--instance=i-9", "--", "x"}},
		{"the command is left alone", []string{"task", "run", "--instance", "1", "--", "prog", "--instance", "1"}, []string{"task", "run", "--instance", "i-9", "--", "prog", "--instance", "1"}},
		{"no instance flag", []string{"task", "gc"}, []string{"task", "gc"}},
	} {
		if got := replaceInstance(tc.args, "1", "i-9"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: replaceInstance = %v, want %v", tc.name, got, tc.want)
		}
	}
}
