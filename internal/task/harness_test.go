package task

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// Tags of the local VPCs each test starts (see localvpctest.Up), one per
// test so that a crashed run's leftovers are found and never another's.
const (
	tagRun      = "htrun"
	tagDetach   = "htdet"
	tagLimit    = "htlim"
	tagFaults   = "htflt"
	tagCrash    = "htcrash"
	tagEndpoint = "htep"
	tagSandbox  = "htsbx"
	tagGC       = "htgc"
	tagInput    = "htin"
	tagSurvive  = "htsurv"
)

// stateDir is vpcnet's default state directory, which the tests use as a
// user would: every local instance has its own ID, so its task store, IPAM
// store and endpoint files never meet another VPC's.
const stateDir = "/var/lib/vpcnet"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == probeCommand {
		os.Exit(probe(os.Args[2:]))
	}
	for _, tag := range []string{tagRun, tagDetach, tagLimit, tagFaults, tagCrash, tagEndpoint, tagSandbox, tagGC, tagInput, tagSurvive} {
		localvpctest.CleanLeftovers(tag)
	}
	if err := shareWithTasks(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(shared)
	os.Exit(code)
}

// sharedRoot holds what the tests give their tasks to read: the probe
// binary and the release files the probes wait for. Tasks have /tmp of
// their own (where go test builds the binary and t.TempDir lives), so
// this is a host directory they and the instances see (tasks read-only;
// an instance has its own /var/lib, /run and /var/log); each test process has
// its own below it, named by its PID.
const sharedRoot = "/var/cache/vpcnet-test/task"

// shared is this process's directory in sharedRoot, and probeCopy the copy
// of the test binary in it.
var shared, probeCopy string

// shareWithTasks removes the directories of test processes that have
// died, and makes this one's, with the probe.
func shareWithTasks() error {
	entries, _ := os.ReadDir(sharedRoot)
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && !proc.Alive(pid) {
			os.RemoveAll(filepath.Join(sharedRoot, e.Name()))
		}
	}
	shared = filepath.Join(sharedRoot, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(shared, 0o755); err != nil {
		return fmt.Errorf("create the directory shared with tasks: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		return fmt.Errorf("copy the probe for tasks: %w", err)
	}
	probeCopy = filepath.Join(shared, "probe")
	return os.WriteFile(probeCopy, b, 0o755)
}

// releaseFile is a path, new for this test, that a probe in a task can
// wait for (see writeFile).
func releaseFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(shared, "release-"+testenv.RandomHex(6))
	t.Cleanup(func() { os.Remove(p) })
	return p
}

// taskVPC is a local VPC started through the real binary, with the task
// commands of that binary.
type taskVPC struct {
	*localvpctest.VPC
	t testing.TB
	// flags are added to every task command (e.g. --endpoint-idle).
	flags []string
}

func upVPC(t testing.TB, tag string, flags ...string) *taskVPC {
	t.Helper()
	return &taskVPC{VPC: localvpctest.Up(t, tag, flags...), t: t}
}

// task returns `vpcnet task VERB --local NAME ARGS...`, unstarted.
func (v *taskVPC) task(verb string, args ...string) *exec.Cmd {
	argv := append([]string{"task", verb, "--local", v.Name}, v.flags...)
	return v.Command(append(argv, args...)...)
}

// mustTask runs a task command and returns its stdout, failing the test
// (with stderr) when it fails.
func (v *taskVPC) mustTask(verb string, args ...string) string {
	v.t.Helper()
	cmd := v.task(verb, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		v.t.Fatalf("vpcnet task %s %s: %v\nstdout: %s\nstderr: %s", verb, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// detach starts a task in the background on instance n and returns its ID.
func (v *taskVPC) detach(n int, subnet, group, name string, command ...string) string {
	v.t.Helper()
	args := []string{"--instance", fmt.Sprint(n), "--subnet", subnet, "--detach"}
	if group != "" {
		args = append(args, "--security-group", group)
	}
	if name != "" {
		args = append(args, "--name", name)
	}
	out := strings.TrimSpace(v.mustTask("run", append(append(args, "--"), command...)...))
	if len(out) != 32 || strings.Trim(out, "0123456789abcdef") != "" {
		v.t.Fatalf("run --detach printed %q, want a task ID (32 hex digits)", out)
	}
	return out
}

// records returns the records of this VPC's instances, finished ones too.
func (v *taskVPC) records() []Record {
	v.t.Helper()
	var all []Record
	if err := json.Unmarshal([]byte(v.mustTask("ls", "--all", "-o", "json")), &all); err != nil {
		v.t.Fatalf("task ls -o json: %v", err)
	}
	var mine []Record
	for _, r := range all {
		for _, in := range v.Instances {
			if r.InstanceID == in.ID {
				mine = append(mine, r)
			}
		}
	}
	return mine
}

// record returns the record of the task with that ID or name.
func (v *taskVPC) record(ref string) Record {
	v.t.Helper()
	for _, r := range v.records() {
		if r.ID == ref || r.Name == ref {
			return r
		}
	}
	v.t.Fatalf("no record of task %s", ref)
	return Record{}
}

// subnet returns the subnet of instance n.
func (v *taskVPC) subnet(n int) string { return v.Instances[n-1].SubnetID }

// instanceDir is where the tasks of instance n keep their state.
func (v *taskVPC) instanceDir(n int) string {
	return filepath.Join(stateDir, "tasks", v.Instances[n-1].ID)
}

// taskENIs returns the ENIs EC2 has with the given tag value (tag key
// "tag:KEY"), as EC2 describes them.
func (v *taskVPC) enisTagged(key, value string) []ec2types.NetworkInterface {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := v.EC2().DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + key), Values: []string{value}}},
	})
	if err != nil {
		v.t.Fatalf("DescribeNetworkInterfaces tag:%s=%s: %v", key, value, err)
	}
	return out.NetworkInterfaces
}

// leftovers lists what is left on instance n of any task, ever: ENIs tagged
// for its tasks, attachments other than the primary, task namespaces,
// addresses on the metadata bridge's IPAM, links in the instance other
// than its own (a veth of the metadata bridge, an ENI device), and task
// records that are not finished. An empty list means clean.
func (v *taskVPC) leftovers(n int) []string {
	v.t.Helper()
	in := v.Instances[n-1]
	var left []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := v.EC2()

	for _, e := range v.enisTagged(TagInstance, in.ID) {
		left = append(left, fmt.Sprintf("ENI %s (%s) tagged for a task of %s", aws.ToString(e.NetworkInterfaceId), e.Status, in.ID))
	}
	out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{in.ID}}},
	})
	if err != nil {
		v.t.Fatalf("DescribeNetworkInterfaces attachment.instance-id: %v", err)
	}
	for _, e := range out.NetworkInterfaces {
		if a := e.Attachment; a == nil || aws.ToInt32(a.DeviceIndex) != 0 {
			left = append(left, fmt.Sprintf("ENI %s attached to %s besides the primary", aws.ToString(e.NetworkInterfaceId), in.ID))
		}
	}

	names, err := netops.ListNamedNS(NetnsPrefix + in.ID + "-")
	if err != nil {
		v.t.Fatal(err)
	}
	for _, name := range names {
		left = append(left, "task namespace "+name)
	}

	if db := filepath.Join(v.instanceDir(n), "ipam", "ipam.db"); exists(db) {
		s, err := ipam.Open(db, 10*time.Second)
		if err != nil {
			v.t.Fatalf("open the instance's IPAM store: %v", err)
		}
		allocs, err := s.Allocations(bridgeNetwork)
		s.Close()
		if err != nil {
			v.t.Fatal(err)
		}
		for _, a := range allocs {
			left = append(left, fmt.Sprintf("IPAM allocation %+v on %s", a, bridgeNetwork))
		}
	}

	for _, l := range v.links(n) {
		if l != "lo" && l != "eth0" && l != bridgeName {
			left = append(left, fmt.Sprintf("link %s on instance %s", l, in.ID))
		}
	}

	for _, r := range v.records() {
		if r.InstanceID == in.ID && !r.State.Done() {
			left = append(left, fmt.Sprintf("task %s recorded as %s", r.ID, r.State))
		}
	}
	return left
}

// assertClean fails the test if anything of a task is left on instance n.
func (v *taskVPC) assertClean(n int) {
	v.t.Helper()
	if left := v.leftovers(n); len(left) > 0 {
		v.t.Errorf("left on instance %d:\n  %s", n, strings.Join(left, "\n  "))
	}
}

// links names the links in instance n's namespace.
func (v *taskVPC) links(n int) []string {
	v.t.Helper()
	var names []string
	err := ns.WithNetNSPath(netops.NamedNSPath(v.Instances[n-1].Namespace), func(ns.NetNS) error {
		links, err := netops.ListLinks()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		v.t.Fatalf("list links of instance %d: %v", n, err)
	}
	slices.Sort(names)
	return names
}

// faults replaces the local VPC's fault injection.
func (v *taskVPC) faults(js string) {
	v.t.Helper()
	args := []string{"local", "faults", "--name", v.Name}
	if js == "" {
		args = append(args, "--clear")
	} else {
		args = append(args, js)
	}
	v.Vpcnet(args...)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// probeBin is the test binary, which the tasks run as their command (see
// probe), as a copy they can see.
func probeBin(t testing.TB) string { return probeCopy }

// lineWatcher reads a stream line by line, keeping every line, and tells
// whoever waits when a line satisfying a condition has been seen.
type lineWatcher struct {
	mu    sync.Mutex
	lines []string
	seen  chan struct{} // closed when match first holds
	done  chan struct{} // closed when the stream ends
	match func(string) bool
}

func watchLines(r io.Reader, match func(string) bool) *lineWatcher {
	w := &lineWatcher{seen: make(chan struct{}), done: make(chan struct{}), match: match}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		matched := false
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			if !matched && w.match != nil && w.match(sc.Text()) {
				matched = true
				close(w.seen)
			}
		}
	}()
	return w
}

func (w *lineWatcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// progressStep reports whether a progress line of the launcher is the
// given step (the second column).
func progressStep(line, step string) bool {
	f := strings.Fields(line)
	return len(f) >= 2 && f[1] == step
}

// exitStatus returns a finished command's exit code, or 128+signal.
func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// waitFor polls cond until it holds or the limit passes. The limit only
// bounds a hang; no assertion depends on how fast cond comes true.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, limit, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

// endpointPID returns the PID in the instance's endpoint PID file (0: none).
func (v *taskVPC) endpointPID(n int) int {
	return readPID(filepath.Join(v.instanceDir(n), "endpoint.pid"))
}

// writeFile creates an empty file (a signal to a probe that waits for it).
func writeFile(path string) error { return os.WriteFile(path, nil, 0o644) }
