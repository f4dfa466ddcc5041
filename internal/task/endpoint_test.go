package task

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestEndpointAnswers checks who gets what from the task metadata
// endpoint: a task its own documents, identified by its metadata-bridge
// address, and nobody another task's.
func TestEndpointAnswers(t *testing.T) {
	s := Store{Path: filepath.Join(t.TempDir(), "tasks.db")}
	task := func(id byte, bridge string, state State) Record {
		return Record{
			ID: strings.Repeat(string(id), 32), State: state, InstanceID: "i-1", BridgeAddr: netip.MustParseAddr(bridge),
			ENIID: "eni-" + string(id), MAC: "02:00:00:00:00:0" + string(id), Addresses: []netip.Addr{netip.MustParseAddr("10.0.0." + fmt.Sprint(id-'a'+5))},
			SubnetCIDR: netip.MustParsePrefix("10.0.0.0/20"), Gateway: netip.MustParseAddr("10.0.0.1"), Groups: []string{"sg-" + string(id)},
		}
	}
	a, b, gone := task('a', "169.254.172.2", StateRunning), task('b', "169.254.172.3", StateRunning), task('c', "169.254.172.4", StateStopped)
	for _, r := range []Record{a, b, gone} {
		if err := s.Put(&r); err != nil {
			t.Fatal(err)
		}
	}
	e := Endpoint{Store: s, Region: "us-east-1", Zone: "us-east-1a"}
	for _, tc := range []struct {
		from, path string
		status     int
		eni        string // of the container document
		arn        string // of the task document
	}{
		{"169.254.172.2", "/v4/" + a.ID, 200, "eni-a", ""},
		{"169.254.172.2", "/v4", 200, "eni-a", ""},
		{"169.254.172.2", "/v4/" + a.ID + "/task", 200, "", "task/vpcnet/" + a.ID},
		{"169.254.172.2", "/v4/task", 200, "", "task/vpcnet/" + a.ID},
		{"169.254.172.3", "/v4/" + b.ID, 200, "eni-b", ""},
		{"169.254.172.2", "/v4/" + b.ID, 403, "", ""},
		{"169.254.172.2", "/v4/" + b.ID + "/task", 403, "", ""},
		{"169.254.172.3", "/v4/" + a.ID, 403, "", ""},
		{"169.254.172.4", "/v4/" + gone.ID, 403, "", ""}, // a stopped task's address
		{"10.0.0.9", "/v4/" + a.ID, 403, "", ""},         // not from a metadata bridge
		{"169.254.172.2", "/v3/" + a.ID, 404, "", ""},
		{"169.254.172.2", "/v4/" + a.ID + "/stats", 404, "", ""},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		req.RemoteAddr = tc.from + ":40000"
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("GET %s from %s: %d %s, want %d", tc.path, tc.from, rec.Code, rec.Body, tc.status)
			continue
		}
		if tc.eni != "" {
			var c Container
			if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil || len(c.Networks) != 1 || c.Networks[0].NetworkInterfaceID != tc.eni {
				t.Errorf("GET %s from %s: %s, want the document of %s", tc.path, tc.from, rec.Body, tc.eni)
			}
		}
		if tc.arn != "" {
			var d TaskMetadata
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || !strings.HasSuffix(d.TaskARN, tc.arn) || len(d.Containers) != 1 {
				t.Errorf("GET %s from %s: %s, want the task document ending %s", tc.path, tc.from, rec.Body, tc.arn)
			}
		}
	}
}

// endpointRuns reports whether pid is the metadata endpoint of instanceID.
func endpointRuns(pid int, instanceID string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && proc.Alive(pid) && strings.Contains(string(cmdline), "endpoint") && strings.Contains(string(cmdline), instanceID)
}

// TestMetadataEndpoint checks the life of an instance's task metadata
// endpoint: started by the first task, one for all the tasks of the
// instance, each task served its own data only, gone once no task has run
// for the idle period, started again by the next task, and gone with the
// local VPC.
func TestMetadataEndpoint(t *testing.T) {
	v := upVPC(t, tagEndpoint, "--instances", "1")
	v.flags = []string{"--endpoint-idle", "2s"}
	probe := probeBin(t)
	suffix := testenv.RandomHex(3)
	release := releaseFile(t)
	defer writeFile(release)
	instance := v.Instances[0].ID
	get := func(id, url string) (string, error) {
		out, err := v.task("exec", id, "--", probe, probeCommand, "get", url).CombinedOutput()
		return string(out), err
	}
	eniOf := func(doc string) string {
		var c Container
		if err := json.Unmarshal([]byte(doc), &c); err != nil || len(c.Networks) != 1 {
			return "not a container document: " + doc
		}
		return c.Networks[0].NetworkInterfaceID
	}

	if pid := v.endpointPID(1); endpointRuns(pid, instance) {
		t.Fatalf("an endpoint (pid %d) runs before any task", pid)
	}
	if out, err := v.OnInstance(1, probe, probeCommand, "get", "http://169.254.170.2/v4/"); err == nil {
		t.Fatalf("169.254.170.2 answers before any task: %s", out)
	}

	t1 := v.detach(1, v.subnet(1), "", "t1-"+suffix, probe, probeCommand, "wait", release)
	pid := v.endpointPID(1)
	if !endpointRuns(pid, instance) {
		t.Fatalf("no endpoint runs after the first task started (pid file says %d)", pid)
	}
	t2 := v.detach(1, v.subnet(1), "", "t2-"+suffix, probe, probeCommand, "wait", release)
	if got := v.endpointPID(1); got != pid || !endpointRuns(pid, instance) {
		t.Fatalf("the second task's endpoint is pid %d, the first's %d: want the same one", got, pid)
	}

	for _, pair := range [][2]string{{t1, t2}, {t2, t1}} {
		self, other := pair[0], pair[1]
		doc, err := get(self, fmt.Sprintf("http://%s/v4/%s", EndpointAddr, self))
		if err != nil || eniOf(doc) != v.record(self).ENIID {
			t.Errorf("task %s asking for itself: %v: %s; want its ENI %s", ShortID(self), err, doc, v.record(self).ENIID)
		}
		out, err := get(self, fmt.Sprintf("http://%s/v4/%s", EndpointAddr, other))
		if err == nil || !strings.HasPrefix(out, "status 403") {
			t.Errorf("task %s asking for task %s: %v: %s; want 403", ShortID(self), ShortID(other), err, out)
		}
	}
	if out, err := v.OnInstance(1, probe, probeCommand, "get", "http://169.254.170.2/v4/"); err == nil || !strings.HasPrefix(out, "status 403") {
		t.Errorf("the instance, not a task, asking for metadata: %v: %s; want 403", err, out)
	}

	v.mustTask("stop", t1)
	v.mustTask("stop", t2)
	waitFor(t, "the idle endpoint to exit", time.Minute, func() bool { return !endpointRuns(pid, instance) })
	if got := v.endpointPID(1); got != 0 {
		t.Errorf("the endpoint left its pid file (%d) behind", got)
	}

	t3 := v.detach(1, v.subnet(1), "", "t3-"+suffix, probe, probeCommand, "wait", release)
	pid3 := v.endpointPID(1)
	if pid3 == pid || !endpointRuns(pid3, instance) {
		t.Fatalf("the next task found no new endpoint (pid file says %d, the old one was %d)", pid3, pid)
	}
	if doc, err := get(t3, fmt.Sprintf("http://%s/v4/%s", EndpointAddr, t3)); err != nil || eniOf(doc) != v.record(t3).ENIID {
		t.Errorf("task %s from the new endpoint: %v: %s", ShortID(t3), err, doc)
	}

	// Down with a task running: its teardown and the endpoint go too.
	v.Vpcnet("local", "down", "--name", v.Name)
	waitFor(t, "the endpoint to exit with the local VPC", time.Minute, func() bool { return !endpointRuns(pid3, instance) })
	if exists(v.instanceDir(1)) {
		t.Errorf("the instance's task state %s is left after local down", v.instanceDir(1))
	}
}
