package task

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestGCHarmsNothingAlive runs a task of the default state directory and
// one of another state directory side by side on one instance, then `task
// gc` of each directory: neither task loses its ENI, namespace, veth or
// process, and both still run.
func TestGCHarmsNothingAlive(t *testing.T) {
	v := upVPC(t, tagGC, "--instances", "1")
	probe := probeBin(t)
	release := releaseFile(t)
	t.Cleanup(func() { _ = writeFile(release) })
	foreign := filepath.Join(t.TempDir(), "state")

	ours := v.detach(1, v.subnet(1), "", "", probe, probeCommand, "wait", release)
	theirs := strings.TrimSpace(v.mustTask("run", "--state-dir", foreign, "--instance", "1", "--subnet", v.subnet(1), "--detach", "--",
		probe, probeCommand, "wait", release))
	theirRecord := func() Record {
		var rs []Record
		if err := json.Unmarshal([]byte(v.mustTask("ls", "--state-dir", foreign, "--all", "-o", "json")), &rs); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ID == theirs {
				return r
			}
		}
		t.Fatalf("no record of %s in %s", theirs, foreign)
		return Record{}
	}
	// What each task holds, checked before and after the collections.
	holds := func(when string) {
		t.Helper()
		links := v.links(1)
		for _, r := range []Record{v.record(ours), theirRecord()} {
			if r.State != StateRunning || !proc.Alive(r.PID) {
				t.Errorf("%s: task %s is %s (pid %d alive: %v), want running", when, r.ShortID(), r.State, r.PID, proc.Alive(r.PID))
			}
			if enis := v.enisTagged(TagTask, r.ID); len(enis) != 1 || enis[0].Attachment == nil {
				t.Errorf("%s: task %s has %d attached ENIs, want its one", when, r.ShortID(), len(enis))
			}
			if !exists(r.Netns) {
				t.Errorf("%s: task %s's namespace %s is gone", when, r.ShortID(), r.Netns)
			}
			if !slices.Contains(links, r.BridgePort) {
				t.Errorf("%s: task %s's veth %s is gone from the instance", when, r.ShortID(), r.BridgePort)
			}
		}
	}
	holds("before gc")
	for _, args := range [][]string{{}, {"--state-dir", foreign}} {
		if out, err := v.task("gc", args...).CombinedOutput(); err != nil {
			t.Errorf("task gc %v: %v\n%s", args, err, out)
		}
	}
	holds("after gc of both state directories")
	if out, err := v.task("exec", ours, "--", "true").CombinedOutput(); err != nil {
		t.Errorf("exec into our task after gc: %v: %s", err, out)
	}
	v.mustTask("stop", ours)
	v.mustTask("stop", "--state-dir", foreign, theirs)
	v.assertClean(1)
}

// orphanENI creates an ENI tagged as a task's on instance 1, attaches it
// and waits for its device: what a launcher that lost its record leaves.
func orphanENI(t *testing.T, v *taskVPC, device int32, tags map[string]string) (id, mac string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ts []ec2types.Tag
	for k, val := range tags {
		ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(val)})
	}
	out, err := v.EC2().CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
		SubnetId:          aws.String(v.subnet(1)),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: ts}},
	})
	if err != nil {
		t.Fatalf("CreateNetworkInterface: %v", err)
	}
	id, mac = aws.ToString(out.NetworkInterface.NetworkInterfaceId), aws.ToString(out.NetworkInterface.MacAddress)
	if _, err := v.EC2().AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(id), InstanceId: aws.String(v.Instances[0].ID), DeviceIndex: aws.Int32(device),
	}); err != nil {
		t.Fatalf("AttachNetworkInterface: %v", err)
	}
	hw, _ := net.ParseMAC(mac)
	if _, err := netops.WaitForLink(ctx, netops.NamedNSPath(v.Instances[0].Namespace), hw); err != nil {
		t.Fatalf("the orphan's device never appeared: %v", err)
	}
	return id, mac
}

// moveIn moves the device with that MAC from one named namespace to
// another, as eth0.
func moveIn(t *testing.T, from, to, mac string) {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	target, err := ns.GetNS(netops.NamedNSPath(to))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := ns.WithNetNSPath(netops.NamedNSPath(from), func(ns.NetNS) error {
		l, err := netops.LinkByMAC(hw)
		if err != nil {
			return err
		}
		_, err = netops.MoveLink(l, target, "eth0")
		return err
	}); err != nil {
		t.Fatalf("move %s from %s to %s: %v", mac, from, to, err)
	}
}

// TestOrphanENIs: ENIs tagged for tasks of this instance that no store
// records and no process uses are detached and deleted by `task gc`, which
// knows only their MAC (vpc-eni's DEL needs no addresses), even from the
// namespace of their gone task, which goes too; one recorded by
// another store and younger than the grace period is left alone.
func TestOrphanENIs(t *testing.T) {
	v := upVPC(t, tagGC, "--instances", "1")
	in := v.Instances[0]
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	goneTask := NewID()
	gone, goneMAC := orphanENI(t, v, 1, map[string]string{TagTask: goneTask, TagInstance: in.ID, TagCreated: old})
	young, _ := orphanENI(t, v, 2, map[string]string{TagTask: NewID(), TagInstance: in.ID, TagStore: "another-store",
		TagStateDir: "/nonexistent", TagCreated: time.Now().UTC().Format(time.RFC3339)})
	if len(v.links(1)) < 4 {
		t.Fatalf("the orphans' devices are not on the instance: %v", v.links(1))
	}
	// The first orphan's device is in the namespace of its (gone) task, as
	// a launcher killed after moving it and before recording leaves it.
	leftNS := netnsName(&Record{ID: goneTask, InstanceID: in.ID})
	target, err := netops.CreateNamedNS(leftNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netops.DeleteNamedNS(leftNS) })
	target.Close()
	moveIn(t, in.Namespace, leftNS, goneMAC)

	out, err := v.task("gc").CombinedOutput()
	if err != nil {
		t.Fatalf("task gc: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = v.EC2().DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{gone}})
	if err == nil || !strings.Contains(err.Error(), "InvalidNetworkInterfaceID.NotFound") {
		t.Errorf("the orphan ENI %s after gc: %v; want it deleted\ngc said: %s", gone, err, out)
	}
	hw, _ := net.ParseMAC(goneMAC)
	_ = ns.WithNetNSPath(netops.NamedNSPath(in.Namespace), func(ns.NetNS) error {
		if l, err := netops.LinkByMAC(hw); err == nil && l != nil {
			t.Errorf("the orphan's device %s is still on the instance", l.Attrs().Name)
		}
		return nil
	})
	if exists(netops.NamedNSPath(leftNS)) {
		t.Errorf("the gone task's namespace %s, which held its ENI's device, is left after gc", leftNS)
	}
	d, err := v.EC2().DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{young}})
	if err != nil || len(d.NetworkInterfaces) != 1 || d.NetworkInterfaces[0].Attachment == nil {
		t.Errorf("the young ENI of another store %s after gc: %v %+v; want it left attached", young, err, d)
	}
	if !strings.Contains(string(out), young) {
		t.Errorf("gc does not say it left %s alone:\n%s", young, out)
	}
}

// TestOrphanedTasks: `task ls` shows a task whose supervisor died as
// orphaned, `task gc` finishes it; `task ls` shows only the chosen local
// VPC's tasks, not those of other instances the state directory knows.
func TestOrphanedTasks(t *testing.T) {
	v := upVPC(t, tagGC, "--instances", "1")
	release := releaseFile(t)
	t.Cleanup(func() { _ = writeFile(release) })

	// A store of an instance that is not this VPC's, with a live task.
	elsewhere := filepath.Join(stateDir, "tasks", "i-ht"+testenv.RandomHex(6))
	t.Cleanup(func() { _ = os.RemoveAll(elsewhere) })
	other := &Record{ID: NewID(), InstanceID: filepath.Base(elsewhere), State: StateRunning, Supervisor: os.Getpid(), Created: time.Now()}
	if err := (Store{Path: filepath.Join(elsewhere, "tasks.db")}).Put(other); err != nil {
		t.Fatal(err)
	}

	id := v.detach(1, v.subnet(1), "", "", probeBin(t), probeCommand, "wait", release)
	r := v.record(id)
	if err := syscall.Kill(r.Supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the supervisor to die", time.Minute, func() bool { return !proc.Alive(r.Supervisor) })

	var listed []Listed
	if err := json.Unmarshal([]byte(v.mustTask("ls", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range listed {
		if l.ID == other.ID {
			t.Errorf("task ls --local %s lists a task of instance %s", v.Name, other.InstanceID)
		}
		if l.ID == id {
			found = true
			if !l.Orphaned {
				t.Errorf("task %s with its supervisor dead: orphaned false in ls -o json", r.ShortID())
			}
		}
	}
	if !found {
		t.Fatalf("task ls does not list %s: %+v", id, listed)
	}
	table := v.mustTask("ls")
	row := ""
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, r.ShortID()) {
			row = l
		}
	}
	if !strings.Contains(row, "orphaned") {
		t.Errorf("task ls row for %s: %q, want it orphaned\n%s", r.ShortID(), row, table)
	}

	if out, err := v.task("gc").CombinedOutput(); err != nil {
		t.Fatalf("task gc: %v\n%s", err, out)
	}
	if proc.Alive(r.PID) {
		t.Errorf("the orphaned task's command (pid %d) runs after gc", r.PID)
	}
	v.assertClean(1)
}

// TestGCAfterLostRecords: what gc does with ENIs whose record it lacks.
// A running task whose store lost tasks.db keeps its ENI and namespace
// (a process runs there), and once its processes are gone gc takes all of
// it back; an ENI tagged with this store's identity and no record goes at
// once, young as it is; an old one of another store whose record there
// has a live supervisor stays.
func TestGCAfterLostRecords(t *testing.T) {
	v := upVPC(t, tagGC, "--instances", "1", "--instance-type", "m5.xlarge") // 4 ENIs
	in := v.Instances[0]
	release := releaseFile(t)
	t.Cleanup(func() { _ = writeFile(release) })

	id := v.detach(1, v.subnet(1), "", "", probeBin(t), probeCommand, "wait", release)
	r := v.record(id)
	storeID, err := (Host{StateDir: stateDir}).StoreID(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(v.instanceDir(1), "tasks.db")); err != nil {
		t.Fatal(err)
	}
	ours, _ := orphanENI(t, v, 2, map[string]string{TagTask: NewID(), TagInstance: in.ID, TagStore: storeID,
		TagStateDir: stateDir, TagCreated: time.Now().UTC().Format(time.RFC3339)})

	elsewhere := t.TempDir()
	alive := &Record{ID: NewID(), InstanceID: in.ID, State: StateRunning, Supervisor: os.Getpid(), Created: time.Now()}
	if err := (Host{StateDir: elsewhere}).Store(in.ID).Put(alive); err != nil {
		t.Fatal(err)
	}
	theirs, _ := orphanENI(t, v, 3, map[string]string{TagTask: alive.ID, TagInstance: in.ID, TagStore: "another-store",
		TagStateDir: elsewhere, TagCreated: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})

	out, err := v.task("gc").CombinedOutput()
	if err != nil {
		t.Fatalf("task gc: %v\n%s", err, out)
	}
	attached := func(eni string) bool {
		d, err := v.EC2().DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
		return err == nil && len(d.NetworkInterfaces) == 1 && d.NetworkInterfaces[0].Attachment != nil
	}
	if !proc.Alive(r.PID) || !exists(r.Netns) || !attached(r.ENIID) {
		t.Errorf("the task whose tasks.db was lost, after gc: process %d alive %v, namespace %v, ENI %s attached %v; want all kept\ngc said: %s",
			r.PID, proc.Alive(r.PID), exists(r.Netns), r.ENIID, attached(r.ENIID), out)
	}
	if enis := v.enisTagged(TagTask, r.ID); len(enis) != 1 {
		t.Errorf("the running task has %d ENIs after gc, want its one", len(enis))
	}
	if _, err := v.EC2().DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{ours}}); err == nil ||
		!strings.Contains(err.Error(), "InvalidNetworkInterfaceID.NotFound") {
		t.Errorf("the ENI tagged with this store's identity and no record, after gc: %v; want it deleted\ngc said: %s", err, out)
	}
	if !attached(theirs) || !strings.Contains(string(out), theirs) {
		t.Errorf("the old ENI of another store whose task's supervisor runs: attached %v; want it left, and said so\ngc said: %s", attached(theirs), out)
	}

	// The task's processes go (its supervisor first, so nothing tears it
	// down but gc): gc now has nothing alive to spare.
	for _, pid := range []int{r.Supervisor, r.PID} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the task's processes to die", time.Minute, func() bool { return !proc.Alive(pid) })
	}
	waitFor(t, "the namespace to have no process", time.Minute, func() bool { return !proc.AnyInNamespace(r.Netns) })
	if out, err := v.task("gc").CombinedOutput(); err != nil {
		t.Fatalf("task gc: %v\n%s", err, out)
	}
	if err := (Host{StateDir: elsewhere}).Store(in.ID).Delete(alive.ID); err != nil {
		t.Fatal(err)
	}
	if out, err := v.task("gc", "--state-dir", elsewhere).CombinedOutput(); err != nil {
		t.Fatalf("task gc --state-dir %s: %v\n%s", elsewhere, err, out)
	}
	v.assertClean(1)
}
