package task

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSpecValidate(t *testing.T) {
	ok := Spec{SubnetID: "subnet-1", Command: []string{"true"}}
	for _, tc := range []struct {
		name string
		spec Spec
		says string // "" when valid
	}{
		{"valid", ok, ""},
		{"no subnet", Spec{Command: []string{"true"}}, "--subnet"},
		{"no command", Spec{SubnetID: "subnet-1"}, "no command"},
		{"bad name", Spec{SubnetID: "subnet-1", Command: []string{"true"}, Name: "a\nb"}, "--name"},
		{"bad capability", Spec{SubnetID: "subnet-1", Command: []string{"true"}, Sandbox: Sandbox{CapAdd: []string{"FLY"}}}, `--cap-add "FLY"`},
	} {
		err := tc.spec.Validate()
		if tc.says == "" && err != nil || tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.says)
		}
	}
}

// TestSupervisionRoundTrip: what Detach hands the supervisor comes out
// whole on the other side (the supervisor is another process: it knows
// only that one argument).
func TestSupervisionRoundTrip(t *testing.T) {
	in := supervision{
		Runner: Runner{StateDir: "/s", CNIPath: []string{"/a", "/b"}, EndpointIdle: 3 * time.Second, Runtime: "runc", Self: []string{"/bin/vpcnet", "task"}},
		ID:     NewID(),
		Options: RunOptions{Spec: Spec{Name: "web", SubnetID: "subnet-1", Groups: []string{"sg-1"}, Command: []string{"sh", "-c", "echo 'a b'"},
			Sandbox: Sandbox{CapAdd: []string{"CAP_NET_ADMIN"}, Privileged: true}}, Timeout: time.Minute, Instance: "i-1"},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out supervision
	if err := json.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: %+v (%v), want %+v", out, err, in)
	}
	if err := Supervise(context.Background(), "{not json"); err == nil || !strings.Contains(err.Error(), "supervisor's argument") {
		t.Errorf("Supervise of a bad argument: %v", err)
	}
}

func TestListedStatus(t *testing.T) {
	self := os.Getpid()
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{State: StateRunning, Supervisor: self}, "running"},
		{Record{State: StateRunning, Supervisor: 1 << 30}, "orphaned"},
		{Record{State: StateStarting}, "orphaned"},
		{Record{State: StateStopped}, "stopped"},
	} {
		l := Listed{Record: tc.r, Orphaned: tc.r.Orphaned()}
		if got := l.Status(); got != tc.want {
			t.Errorf("%+v: Status %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestEndpointChecksPort: with CheckPort, a task's address answers only
// over a connection that came in by its own bridge port.
func TestEndpointChecksPort(t *testing.T) {
	s := Store{Path: t.TempDir() + "/tasks.db"}
	a := Record{ID: strings.Repeat("a", 32), State: StateRunning, BridgeAddr: mustAddr("169.254.172.2"), BridgePort: "vbraaaa", ENIID: "eni-a"}
	old := Record{ID: strings.Repeat("b", 32), State: StateRunning, BridgeAddr: mustAddr("169.254.172.3"), ENIID: "eni-b"} // no port recorded
	for _, r := range []Record{a, old} {
		if err := s.Put(&r); err != nil {
			t.Fatal(err)
		}
	}
	e := Endpoint{Store: s, Region: "r", Zone: "z", CheckPort: true}
	for _, tc := range []struct {
		from, port string
		status     int
	}{
		{"169.254.172.2", "vbraaaa", 200},
		{"169.254.172.2", "vbrbbbb", 403}, // another task's port: a stolen address
		{"169.254.172.2", "", 403},        // not through a bridge port
		{"169.254.172.3", "vbrbbbb", 403}, // a record that does not say its port
	} {
		req := httptest.NewRequest(http.MethodGet, "/v4", nil)
		req.RemoteAddr = tc.from + ":40000"
		req = req.WithContext(context.WithValue(req.Context(), arrivalKey{}, arrival{port: tc.port}))
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("GET /v4 from %s by port %q: %d %s, want %d", tc.from, tc.port, rec.Code, rec.Body, tc.status)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
