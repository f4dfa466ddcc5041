package task

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// TestTaskSurvivesControlPlaneCrash: a detached task outlives a kill -9 of
// its local VPC's control plane. Meanwhile `task ls` still lists it (and
// names the restart) and `task stop` refuses, naming the restart, rather
// than half tear it down without EC2; after what the message says (`vpcnet
// local restart --name N`) the task runs on with the same process, ENI and
// addresses, exec reaches it, and a stop leaves nothing behind.
func TestTaskSurvivesControlPlaneCrash(t *testing.T) {
	v := upVPC(t, tagSurvive, "--instances", "1")
	probe := probeBin(t)
	release := releaseFile(t)
	id := v.detach(1, v.subnet(1), "", "", probe, probeCommand, "wait", release)
	before := v.record(id)

	ctl, err := localvpc.Find(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(ctl.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the killed control plane to be gone", 10*time.Second, func() bool { return !proc.Alive(ctl.PID) })

	restart := "vpcnet local restart --name " + v.Name
	if out, err := v.task("stop", id).CombinedOutput(); err == nil || !strings.Contains(string(out), restart) {
		t.Errorf("task stop with the control plane killed: %v %q, want a refusal naming `%s`", err, out, restart)
	}
	out, err := v.task("ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), before.ShortID()) || !strings.Contains(string(out), restart) {
		t.Errorf("task ls with the control plane killed: %v %q, want the task listed and `%s` named", err, out, restart)
	}
	if r := v.record(id); r.State != StateRunning || r.PID != before.PID || !proc.Alive(r.PID) {
		t.Fatalf("task after the control plane died and a refused stop: %+v, want it running as pid %d", r, before.PID)
	}

	v.Vpcnet("local", "restart", "--name", v.Name)
	after := v.record(id)
	if after.State != StateRunning || after.PID != before.PID || !proc.Alive(after.PID) ||
		after.ENIID != before.ENIID || !slices.Equal(after.Addresses, before.Addresses) {
		t.Errorf("task after the restart: %+v, want it running as before: %+v", after, before)
	}
	if enis := v.enisTagged(TagTask, id); len(enis) != 1 || *enis[0].NetworkInterfaceId != before.ENIID ||
		enis[0].Attachment == nil || *enis[0].Attachment.InstanceId != v.Instances[0].ID {
		t.Errorf("EC2 after the restart has %d ENIs tagged for the task, want %s attached to %s", len(enis), before.ENIID, v.Instances[0].ID)
	}
	if got := v.mustTask("exec", id, "--", "sh", "-c", "ip -4 -o addr show dev eth0"); !strings.Contains(got, before.Addresses[0].String()) {
		t.Errorf("exec after the restart sees %q, want the task's address %s", got, before.Addresses[0])
	}

	v.mustTask("stop", id)
	if r := v.record(id); r.State != StateStopped {
		t.Errorf("task after stop: %s, want %s", r.State, StateStopped)
	}
	if enis := v.enisTagged(TagTask, id); len(enis) != 0 {
		t.Errorf("EC2 still has %d ENIs tagged for the stopped task", len(enis))
	}
	v.assertClean(1)
}
