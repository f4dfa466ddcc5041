package task

import (
	"os"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		state      byte
		start      uint64
		ok         bool
	}{
		{"running", "4242 (vpcnet) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 987654 1000 100", 'S', 987654, true},
		{"zombie", "4242 (vpcnet) Z 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 0 0", 'Z', 5, true},
		{"name with spaces and parentheses", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0", 'R', 123, true},
		{"truncated", "7 (x) S 1 2 3", 0, 0, false},
		{"no command name", "garbage", 0, 0, false},
		{"start not a number", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0 0", 0, 0, false},
	} {
		state, start, ok := parseProcStat(tc.stat)
		if state != tc.state || start != tc.start || ok != tc.ok {
			t.Errorf("%s: parseProcStat = %q, %d, %v; want %q, %d, %v", tc.name, state, start, ok, tc.state, tc.start, tc.ok)
		}
	}
}

func TestSupervisorAlive(t *testing.T) {
	self := os.Getpid()
	start := processStart(self)
	if start == 0 {
		t.Fatal("no start time for this process")
	}
	for _, tc := range []struct {
		name string
		r    Record
		want bool
	}{
		{"this process", Record{Supervisor: self, SupervisorStart: start}, true},
		{"this process, start not recorded", Record{Supervisor: self}, true},
		{"a recycled PID: another start time", Record{Supervisor: self, SupervisorStart: start + 1}, false},
		{"no supervisor", Record{}, false},
		{"a PID that does not exist", Record{Supervisor: 1 << 30}, false},
	} {
		if got := tc.r.SupervisorAlive(); got != tc.want {
			t.Errorf("%s: SupervisorAlive = %v, want %v", tc.name, got, tc.want)
		}
	}
}
