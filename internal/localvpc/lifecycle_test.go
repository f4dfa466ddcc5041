package localvpc_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// rootNamespace is what the root namespace holds that a local VPC could
// have touched: links, addresses, routes, the nftables ruleset and the
// routing sysctls. A local VPC must never change any of it.
func rootNamespace(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "rule", "show"},
		{"nft", "-s", "list", "ruleset"},
	} {
		b.WriteString("$ " + strings.Join(args, " ") + "\n" + testenv.Run(t, args[0], args[1:]...))
	}
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/proxy_arp", "net/ipv4/conf/all/rp_filter", "net/ipv6/conf/all/forwarding"} {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(s + " = " + string(v))
	}
	// Lifetimes of addresses and routes learnt from router advertisements
	// count down.
	return regexp.MustCompile(`(valid_lft|preferred_lft|expires) \S+`).ReplaceAllString(b.String(), "$1")
}

// namespacesOf lists the named namespaces of the local VPC called name.
func namespacesOf(t *testing.T, name string) []string {
	t.Helper()
	names, err := netops.ListNamedNS(name + "-")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// controlPlanes lists the live processes serving the local VPC called name.
func controlPlanes(t *testing.T, name string) []int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if len(args) >= 5 && filepath.Base(args[0]) == "vpcnet" && slices.Equal(args[1:5], []string{"local", "serve", "--name", name}) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if proc.Alive(pid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

func stateDirExists(name string) bool {
	_, err := os.Stat(localvpc.StateDir(name))
	return err == nil
}

// TestDownLeavesTheMachineAsItWas takes a local VPC down and looks for
// anything of it left, and checks that the root namespace was never
// touched, not even while the VPC was up.
func TestDownLeavesTheMachineAsItWas(t *testing.T) {
	before := rootNamespace(t)
	v := up(t, tagLifecycle)
	// Not vacuous: the VPC had namespaces, a state and a process.
	want := []string{v.Name + "-fabric", v.Instances[0].Namespace, v.Instances[1].Namespace}
	slices.Sort(want)
	if got := namespacesOf(t, v.Name); !slices.Equal(got, want) {
		t.Fatalf("namespaces of the running VPC: %v, want %v", got, want)
	}
	if !stateDirExists(v.Name) || !slices.Equal(controlPlanes(t, v.Name), []int{v.PID}) {
		t.Fatalf("running VPC: state directory %v, control planes %v (pid %d)", stateDirExists(v.Name), controlPlanes(t, v.Name), v.PID)
	}
	if during := rootNamespace(t); during != before {
		t.Errorf("the root namespace changed when the VPC came up:\nbefore:\n%s\nup:\n%s", before, during)
	}

	v.Vpcnet("local", "down", "--name", v.Name)
	if got := namespacesOf(t, v.Name); len(got) != 0 {
		t.Errorf("namespaces left by down: %v", got)
	}
	if stateDirExists(v.Name) {
		t.Errorf("state directory %s left by down", localvpc.StateDir(v.Name))
	}
	if pids := controlPlanes(t, v.Name); len(pids) != 0 || proc.Alive(v.PID) {
		t.Errorf("control plane still running after down: %v", pids)
	}
	if after := rootNamespace(t); after != before {
		t.Errorf("the root namespace is not as it was before up:\nbefore:\n%s\nafter down:\n%s", before, after)
	}
	if out, err := v.Command("local", "status", "--name", v.Name).CombinedOutput(); err == nil || !strings.Contains(string(out), "no local VPC") {
		t.Errorf("status after down: %v %s", err, out)
	}
}

// TestUpAfterCrash kills a control plane with SIGKILL and runs `up` again
// under the same name: it must resume the VPC (never replace it) and leave
// exactly one working VPC, the same one.
func TestUpAfterCrash(t *testing.T) {
	testenv.Tool(t, "ping")
	v := up(t, tagLifecycle)
	old := namespacesOf(t, v.Name)
	// While it runs, a second up under its name is refused and changes
	// nothing.
	if out, err := v.Command("local", "up", "--name", v.Name).CombinedOutput(); err == nil || !strings.Contains(string(out), "already up") {
		t.Errorf("up of a VPC that is up: %v %s", err, out)
	}
	if pids := controlPlanes(t, v.Name); !slices.Equal(pids, []int{v.PID}) || !slices.Equal(namespacesOf(t, v.Name), old) {
		t.Fatalf("a refused up changed the running VPC: control planes %v, namespaces %v", pids, namespacesOf(t, v.Name))
	}
	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, "the killed control plane is dead", converge, func() bool { return !proc.Alive(v.PID) })
	if out, err := v.Command("local", "status", "--name", v.Name).CombinedOutput(); err == nil {
		t.Errorf("status of a VPC whose control plane was killed succeeded:\n%s", out)
	}

	v.Vpcnet("local", "up", "--name", v.Name)
	ctl, err := localvpc.Find(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if pids := controlPlanes(t, v.Name); !slices.Equal(pids, []int{ctl.PID}) {
		t.Errorf("control planes of %s: %v, want just %d", v.Name, pids, ctl.PID)
	}
	want := []string{v.Name + "-fabric"}
	for _, in := range ctl.Instances {
		want = append(want, in.Namespace)
	}
	slices.Sort(want)
	if got := namespacesOf(t, v.Name); !slices.Equal(got, want) {
		t.Errorf("namespaces after up: %v, want %v (before the crash: %v)", got, want, old)
	}
	out, err := operator(ctl).DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			ids = append(ids, *in.InstanceId)
		}
	}
	if len(ids) != 2 || !slices.Contains(ids, ctl.Instances[0].ID) || !slices.Contains(ids, ctl.Instances[1].ID) {
		t.Errorf("instances of the new VPC: %v, want %s and %s", ids, ctl.Instances[0].ID, ctl.Instances[1].ID)
	}
	if !slices.Equal(ctl.Instances, v.Instances) {
		t.Errorf("instances after up: %+v, want those from before the crash %+v", ctl.Instances, v.Instances)
	}
	if !pings(ctl.Instances[0].Namespace, ctl.Instances[1].PrivateIP) {
		t.Errorf("instance 1 of the new VPC does not reach instance 2")
	}
}

// TestBadFlags gives `up` configurations that cannot work: each is refused
// with a message naming what is wrong, and leaves nothing behind.
func TestBadFlags(t *testing.T) {
	testenv.Privileged(t)
	bin := testenv.Binary(t, "vpcnet")
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--vpc-cidr", "10.0.0.0/33"}, "--vpc-cidr"},
		{[]string{"--vpc-cidr", "10.0.0.0/8"}, "between /16 and /28"},
		{[]string{"--instance-type", "nope"}, "'nope'"},
		{[]string{"--instances", "0"}, "--instances 0"},
		{[]string{"--instances", "65"}, "--instances 65"},
		{[]string{"--subnets", "10.9.0.0/24"}, "not inside"},
		// Refused by the control plane's EC2 model, after start-up began.
		{[]string{"--subnets", "10.0.0.0/29"}, "10.0.0.0/29"},
		{[]string{"--subnets", "10.0.0.0/20,10.0.8.0/24"}, "10.0.8.0/24"},
		{[]string{"--faults", `{"actions":{"*":{"errorRate":2}}}`}, "errorRate"},
		{[]string{"--listen", "127.0.0.1:notaport"}, "127.0.0.1:notaport"},
	} {
		name := localvpctest.NamePrefix + tagLifecycle + testenv.RandomHex(3)
		args := append([]string{"local", "up", "--name", name}, c.flags...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			_ = exec.Command(bin, "local", "down", "--name", name).Run()
			t.Errorf("up %v succeeded:\n%s", c.flags, out)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("up %v: %q, want a message naming %q", c.flags, out, c.want)
		}
		if ns, dir, pids := namespacesOf(t, name), stateDirExists(name), controlPlanes(t, name); len(ns) > 0 || dir || len(pids) > 0 {
			t.Errorf("up %v left namespaces %v, state directory %v, control planes %v", c.flags, ns, dir, pids)
			_ = exec.Command(bin, "local", "down", "--name", name).Run()
		}
	}

	// A name is a directory under the state directory and a prefix of
	// namespace names, nothing else. The directory a name with ".." in it
	// would reach is one of the test's own (cleaned by TestMain).
	probe := localvpctest.NamePrefix + tagLifecycle + testenv.RandomHex(3)
	if err := os.MkdirAll(filepath.Join(localvpc.StateDir(probe), "keep"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(localvpc.StateDir(probe)) })
	for _, name := range []string{"x/../" + probe, "-x", "a-name-longer-than-20"} {
		for _, cmd := range []string{"up", "down", "status"} {
			out, err := exec.Command(bin, "local", cmd, "--name", name).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "--name") {
				t.Errorf("local %s --name %q: %v %q, want the name refused", cmd, name, err, out)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(localvpc.StateDir(probe), "keep")); err != nil {
		t.Errorf("a command given a name with \"..\" removed %s: %v", localvpc.StateDir(probe), err)
	}

	// The commands that need a running VPC say there is none; down has
	// nothing to do and succeeds.
	name := localvpctest.NamePrefix + tagLifecycle + testenv.RandomHex(3)
	for _, args := range [][]string{
		{"status"}, {"env"}, {"exec", "1", "--", "true"}, {"faults"}, {"restart"},
	} {
		out, err := exec.Command(bin, append([]string{"local", args[0], "--name", name}, args[1:]...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no local VPC") {
			t.Errorf("local %s with no VPC: %v %q, want an error saying there is no local VPC", args[0], err, out)
		}
	}
	if out, err := exec.Command(bin, "local", "down", "--name", name).CombinedOutput(); err != nil {
		t.Errorf("down with nothing to take down: %v\n%s", err, out)
	}
}
