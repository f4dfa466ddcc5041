package task

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestDetachedTasks runs tasks in the background and manages them as a
// user does: `task ls` (table and JSON), `task exec`, `task stop` by ID
// prefix and by name, and `task stop` of a task whose supervisor was
// killed, where the stop command must do the teardown itself.
func TestDetachedTasks(t *testing.T) {
	v := upVPC(t, tagDetach, "--instances", "1")
	probe := probeBin(t)
	suffix := testenv.RandomHex(3)
	release := releaseFile(t)

	web := "web-" + suffix
	webID := v.detach(1, v.subnet(1), "", web, probe, probeCommand, "serve", "8080", web)
	// No name, no security group: EC2 gives the ENI the VPC's default group.
	otherID := v.detach(1, v.subnet(1), "", "", probe, probeCommand, "wait", release)

	t.Run("ls", func(t *testing.T) {
		var records []Record
		if err := json.Unmarshal([]byte(v.mustTask("ls", "-o", "json")), &records); err != nil {
			t.Fatal(err)
		}
		byID := map[string]Record{}
		for _, r := range records {
			byID[r.ID] = r
		}
		for _, id := range []string{webID, otherID} {
			r, ok := byID[id]
			if !ok {
				t.Fatalf("task ls -o json has no task %s", id)
			}
			if r.State != StateRunning || r.PID == 0 || r.ENIID == "" || len(r.Addresses) != 1 || r.InstanceID != v.Instances[0].ID {
				t.Errorf("task %s: %+v; want running, with a PID, an ENI and an address on %s", id, r, v.Instances[0].ID)
			}
			if enis := v.enisTagged(TagTask, id); len(enis) != 1 || *enis[0].NetworkInterfaceId != r.ENIID {
				t.Errorf("task %s records ENI %s; EC2 has %d ENIs tagged for it", id, r.ENIID, len(enis))
			}
		}
		if byID[webID].Name != web {
			t.Errorf("task %s is named %q, want %q", webID, byID[webID].Name, web)
		}
		if g := byID[otherID].Groups; len(g) != 1 || g[0] != v.DefaultGroup {
			t.Errorf("a task given no group records %v; want the VPC's default group %s", g, v.DefaultGroup)
		}

		table := strings.Split(strings.TrimSpace(v.mustTask("ls")), "\n")
		if !strings.HasPrefix(table[0], "TASK") || !strings.Contains(table[0], "STATE") {
			t.Fatalf("task ls has no header: %q", table[0])
		}
		for _, id := range []string{webID, otherID} {
			r := byID[id]
			found := false
			for _, row := range table[1:] {
				f := strings.Fields(row)
				if len(f) > 0 && f[0] == ShortID(id) {
					found = true
					for _, want := range []string{r.InstanceID, r.ENIID, r.Addresses[0].String(), "running"} {
						if !strings.Contains(row, want) {
							t.Errorf("task ls row %q lacks %s", row, want)
						}
					}
				}
			}
			if !found {
				t.Errorf("task ls has no row for %s:\n%s", ShortID(id), strings.Join(table, "\n"))
			}
		}
	})

	t.Run("what running tasks hold", func(t *testing.T) {
		// Every kind of resource the leak checks of all these tests look
		// for is held by a running task: the checks see each one.
		left := strings.Join(v.leftovers(1), "\n")
		for _, kind := range []string{"ENI eni-", "besides the primary", "task namespace " + NetnsPrefix, "IPAM allocation", "link ", "recorded as running"} {
			if strings.Count(left, kind) < 2 {
				t.Errorf("with two tasks running, the leak check found fewer than two of %q:\n%s", kind, left)
			}
		}
	})

	t.Run("exec", func(t *testing.T) {
		r := v.record(webID)
		// By name: the task's own server answers on its VPC address, from
		// inside the task's namespace.
		url := fmt.Sprintf("http://%s:8080/", r.Addresses[0])
		if out := v.mustTask("exec", web, "--", probe, probeCommand, "get", url); out != "hello from "+web+"\n" {
			t.Errorf("exec %s -- get %s: %q", web, url, out)
		}
		// By ID prefix, with the task's environment.
		out := v.mustTask("exec", otherID[:8], "--", "sh", "-c", `echo "$ECS_CONTAINER_METADATA_URI_V4"`)
		if want := fmt.Sprintf("http://%s/v4/%s\n", EndpointAddr, otherID); out != want {
			t.Errorf("exec: ECS_CONTAINER_METADATA_URI_V4=%q, want %q", out, want)
		}
		// The metadata the task's processes get is about its ENI with the
		// VPC's default group.
		doc := v.mustTask("exec", otherID, "--", probe, probeCommand, "get", strings.TrimSpace(out))
		var c Container
		if err := json.Unmarshal([]byte(doc), &c); err != nil || len(c.Networks) != 1 {
			t.Fatalf("metadata from exec: %q: %v", doc, err)
		}
		if n := c.Networks[0]; n.NetworkInterfaceID != v.record(otherID).ENIID || len(n.SecurityGroupIDs) != 1 || n.SecurityGroupIDs[0] != v.DefaultGroup {
			t.Errorf("metadata networks %+v; want ENI %s with the default group %s", n, v.record(otherID).ENIID, v.DefaultGroup)
		}
		if out, err := v.task("exec", "no-such-task", "--", "true").CombinedOutput(); err == nil || !strings.Contains(string(out), "no task") {
			t.Errorf("exec of an unknown task: %v: %s", err, out)
		}
	})

	t.Run("stop by name and by ID prefix", func(t *testing.T) {
		webPID, otherPID := v.record(webID).PID, v.record(otherID).PID
		v.mustTask("stop", web)
		if r := v.record(webID); r.State != StateStopped {
			t.Errorf("after stop by name, task %s is %s", web, r.State)
		}
		if len(v.enisTagged(TagTask, webID)) != 0 {
			t.Errorf("task %s's ENI is left after stop", web)
		}
		if proc.Alive(webPID) {
			t.Errorf("task %s's command (pid %d) still runs after stop", web, webPID)
		}
		v.mustTask("stop", otherID[:10])
		if r := v.record(otherID); r.State != StateStopped {
			t.Errorf("after stop by ID prefix, task %s is %s", otherID, r.State)
		}
		if proc.Alive(otherPID) {
			t.Errorf("task %s's command (pid %d) still runs after stop", otherID, otherPID)
		}
		v.assertClean(1)
		out, err := v.task("stop", webID).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "already stopped") {
			t.Errorf("second stop: %v: %s", err, out)
		}
	})

	t.Run("stop after the supervisor died", func(t *testing.T) {
		id := v.detach(1, v.subnet(1), "", "", probe, probeCommand, "wait", release)
		r := v.record(id)
		if !r.SupervisorAlive() {
			t.Fatalf("task %s's supervisor %d does not run", id, r.Supervisor)
		}
		// The supervisor is a vpcnet process this test started (through
		// `task run --detach`).
		if err := syscall.Kill(r.Supervisor, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !proc.Alive(r.PID) {
			t.Fatalf("the task's command (pid %d) died with its supervisor; nothing left to stop", r.PID)
		}
		// Straight away, while the dead supervisor may still be a zombie
		// waiting for init, and without --local: the task's record says
		// which instance, hence which local VPC, it is on.
		out, err := v.Command("task", "stop", ShortID(id)).CombinedOutput()
		if err != nil {
			t.Fatalf("stop: %v\n%s", err, out)
		}
		// The stop command did the teardown: its own progress shows it.
		for _, step := range []string{"stop-command", "cni-del", "delete-eni"} {
			if !strings.Contains(string(out), " "+step+" ") {
				t.Errorf("stop printed no %s step:\n%s", step, out)
			}
		}
		if proc.Alive(r.PID) {
			t.Errorf("the task's command (pid %d) still runs", r.PID)
		}
		if got := v.record(id).State; got != StateStopped {
			t.Errorf("task is %s after stop, want stopped", got)
		}
		v.assertClean(1)
	})
	_ = os.WriteFile(release, nil, 0o644)
}
