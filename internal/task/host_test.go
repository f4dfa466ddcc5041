package task

import "testing"

func TestLaunched(t *testing.T) {
	for _, tc := range []struct {
		name          string
		r             Record
		started, done bool
	}{
		{"still starting", Record{State: StateStarting}, false, false},
		{"running", Record{State: StateRunning}, true, true},
		// A command that exits at once is stopping or stopped by the time
		// `run --detach` looks: it ran all the same.
		{"already stopping", Record{State: StateStopping}, true, true},
		{"already stopped", Record{State: StateStopped}, true, true},
		{"failed", Record{State: StateFailed, Error: "attach-eni: no"}, false, true},
		// A failed launch whose release failed too stays "stopping".
		{"failed, release incomplete", Record{State: StateStopping, Error: "attach-eni: no"}, false, true},
	} {
		started, done := tc.r.Launched()
		if started != tc.started || done != tc.done {
			t.Errorf("%s: Launched = %v, %v; want %v, %v", tc.name, started, done, tc.started, tc.done)
		}
	}
}
