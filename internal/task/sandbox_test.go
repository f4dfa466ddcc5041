package task

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// Capability numbers (capabilities(7)) the tests look for.
const (
	capNetAdmin  = 12
	capSysModule = 16
	capSysPtrace = 19
	capSysAdmin  = 21
)

func capMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		m |= 1 << slices.Index(capNames, n)
	}
	return m
}

func TestParseCaps(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		err  string
	}{
		{[]string{"NET_ADMIN"}, []string{"CAP_NET_ADMIN"}, ""},
		{[]string{"cap_sys_ptrace", "SYS_PTRACE"}, []string{"CAP_SYS_PTRACE"}, ""},
		{[]string{"NET_ADMINS"}, nil, `--cap-add "NET_ADMINS": not a Linux capability`},
		{nil, nil, ""},
	} {
		got, err := ParseCaps(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCaps(%v) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseCaps(%v) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestOCISpec checks the generated spec: namespaces (the task's network
// namespace by path), capabilities by option, no_new_privs, masks, and the
// state directories hidden.
func TestOCISpec(t *testing.T) {
	held := capNames[:] // every capability: the bounding set of root
	heldNoResource := slices.DeleteFunc(slices.Clone(capNames), func(c string) bool { return c == "CAP_SYS_RESOURCE" })
	top := []hostEntry{{Name: "usr"}, {Name: "bin", Symlink: "usr/bin"}, {Name: "etc"}, {Name: "tmp"}, {Name: "proc"}, {Name: "run"}, {Name: "var"}}
	mounts := []hostMount{{"/", "ext4"}, {"/var/lib/vpcnet/local/x/ns", "nsfs"}, {"/mnt/data", "ext4"}, {"/var/lib/vpcnet/sub", "tmpfs"}, {"/proc/sys/fs/binfmt_misc", "binfmt_misc"}, {"/tmp/e2e/containerd/rootfs", "overlay"}, {"/tmp/e2e/inst/etc", "ext4"}, {"/var/lib/containerd/x/rootfs", "overlay"}}
	hidden := []string{"/var/lib/vpcnet", "/var/run/netns"}
	for _, tc := range []struct {
		name    string
		sandbox Sandbox
		held    []string
		caps    []string
		nnp     bool
		masked  bool
		err     string
	}{
		{"default", Sandbox{}, held, defaultCaps, true, true, ""},
		{"cap-add", Sandbox{CapAdd: []string{"CAP_NET_ADMIN"}}, held, append(slices.Clone(defaultCaps), "CAP_NET_ADMIN"), true, true, ""},
		{"privileged: what vpcnet holds", Sandbox{Privileged: true}, heldNoResource, heldNoResource, false, false, ""},
		{"cap-add of what vpcnet lacks", Sandbox{CapAdd: []string{"CAP_SYS_RESOURCE"}}, heldNoResource, nil, false, false, "does not have it"},
	} {
		r := &Record{ID: strings.Repeat("ab", 16), Command: []string{"/bin/true"}, Netns: "/var/run/netns/t", Sandbox: tc.sandbox}
		s, err := ociSpec(sandboxInput{Record: r, Env: []string{"A=b"}, Cwd: "/", HeldCaps: tc.held, Top: top, Mounts: mounts, Hidden: hidden,
			Tmp: []string{"/tmp", "/var/tmp"}, Secrets: []string{"/etc/shadow", "/root"}})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		caps := slices.Clone(tc.caps)
		slices.Sort(caps)
		got := slices.Clone(s.Process.Capabilities.Effective)
		slices.Sort(got)
		if !slices.Equal(got, caps) || !slices.Equal(s.Process.Capabilities.Bounding, s.Process.Capabilities.Effective) {
			t.Errorf("%s: capabilities %v (bounding %v), want %v", tc.name, got, s.Process.Capabilities.Bounding, caps)
		}
		if s.Process.NoNewPrivileges != tc.nnp {
			t.Errorf("%s: noNewPrivileges %v, want %v", tc.name, s.Process.NoNewPrivileges, tc.nnp)
		}
		if slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") != tc.masked || (len(s.Linux.ReadonlyPaths) > 0) != tc.masked {
			t.Errorf("%s: masked %v, readonly %v; want /proc's: %v", tc.name, s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, tc.masked)
		}
		// The host's secrets are masked whatever the options.
		for _, p := range []string{"/etc/shadow", "/root"} {
			if !slices.Contains(s.Linux.MaskedPaths, p) {
				t.Errorf("%s: %s not masked (%v)", tc.name, p, s.Linux.MaskedPaths)
			}
		}
		var nss []string
		for _, n := range s.Linux.Namespaces {
			nss = append(nss, string(n.Type))
			if n.Type == specs.NetworkNamespace && n.Path != r.Netns {
				t.Errorf("%s: network namespace %q, want the task's %s", tc.name, n.Path, r.Netns)
			}
		}
		slices.Sort(nss)
		if want := []string{"ipc", "mount", "network", "pid", "uts"}; !slices.Equal(nss, want) {
			t.Errorf("%s: namespaces %v, want %v", tc.name, nss, want)
		}
		if tc.name != "default" {
			continue
		}
		// Mounts: the host's directories bound read-only, none of the
		// hidden ones' contents, no nsfs, fresh /proc and /run, a /tmp and
		// /var/tmp of the task's own, tmpfs over what is hidden, after
		// every bind.
		byDest := map[string]specs.Mount{}
		lastBind, firstMask := -1, len(s.Mounts)
		for i, m := range s.Mounts {
			byDest[m.Destination] = m
			if m.Type == "bind" {
				lastBind = i
			}
			if (slices.Contains(hidden, m.Destination) || m.Destination == "/var/tmp") && m.Type == "tmpfs" && i < firstMask {
				firstMask = i
			}
		}
		for _, dest := range []string{"/usr", "/etc", "/var", "/mnt/data"} {
			m, ok := byDest[dest]
			if !ok || m.Type != "bind" || m.Source != dest || !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rbind") {
				t.Errorf("mount %s: %+v, want a non-recursive read-only bind of the host's", dest, m)
			}
		}
		for _, dest := range []string{"/tmp", "/var/tmp"} {
			if m := byDest[dest]; m.Type != "tmpfs" || !slices.Contains(m.Options, "size="+tmpSize) {
				t.Errorf("mount %s: %+v, want a tmpfs of the task's own, at most %s", dest, m, tmpSize)
			}
		}
		for _, dest := range []string{"/bin", "/var/lib/vpcnet/local/x/ns", "/var/lib/vpcnet/sub", "/proc/sys/fs/binfmt_misc", "/tmp/e2e/containerd/rootfs", "/tmp/e2e/inst/etc", "/var/lib/containerd/x/rootfs"} {
			if m, ok := byDest[dest]; ok {
				t.Errorf("mount %s: %+v, want none", dest, m)
			}
		}
		if byDest["/proc"].Type != "proc" || byDest["/run"].Type != "tmpfs" || byDest["/sys"].Type != "sysfs" {
			t.Errorf("/proc, /run, /sys: %+v %+v %+v; want fresh ones", byDest["/proc"], byDest["/run"], byDest["/sys"])
		}
		for _, h := range hidden {
			if byDest[h].Type != "tmpfs" {
				t.Errorf("%s: %+v, want a tmpfs over it", h, byDest[h])
			}
		}
		if firstMask < lastBind {
			t.Errorf("a mask comes before a bind (mask %d, bind %d): the bind would uncover it", firstMask, lastBind)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	info := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:5 / /run/netns/x rw shared:5 - nsfs nsfs rw
31 22 8:2 / /mnt/with\040space rw - xfs /dev/sdb rw
garbage`
	got := parseMountinfo(info)
	want := []hostMount{{"/", "ext4"}, {"/run/netns/x", "nsfs"}, {"/mnt/with space", "xfs"}}
	if !slices.Equal(got, want) {
		t.Errorf("parseMountinfo = %+v, want %+v", got, want)
	}
}

// sandboxOf runs the sandbox probe as a foreground task with extra run
// flags, and returns its report.
func sandboxOf(t *testing.T, v *taskVPC, hidden []string, flags ...string) sandboxReport {
	t.Helper()
	args := append([]string{"--instance", "1", "--subnet", v.subnet(1), "-q"}, flags...)
	args = append(append(args, "--", probeBin(t), probeCommand, "sandbox"), hidden...)
	return parseSandbox(t, v.mustTask("run", args...))
}

func parseSandbox(t *testing.T, out string) sandboxReport {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if j, ok := strings.CutPrefix(l, "SANDBOX "); ok {
			var rep sandboxReport
			if err := json.Unmarshal([]byte(j), &rep); err != nil {
				t.Fatal(err)
			}
			return rep
		}
	}
	t.Fatalf("no sandbox report in %q", out)
	return sandboxReport{}
}

func hostNamespace(t *testing.T, pid, kind string) string {
	t.Helper()
	l, err := os.Readlink(filepath.Join("/proc", pid, "ns", kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSandbox checks a task from inside: its own mount, PID, UTS and IPC
// namespaces; a container's default capabilities (no NET_ADMIN: deleting
// the blackhole to instance metadata fails), no_new_privs; instance
// metadata's credentials out of reach; vpcnet's state and /var/run/netns
// invisible; --cap-add giving one capability; `task exec` entering the
// same namespaces with the same limits.
func TestSandbox(t *testing.T) {
	v := upVPC(t, tagSandbox, "--instances", "1")
	hidden := []string{stateDir, "/var/run/netns", localvpc.BaseStateDir, "/root"}
	self := "self"
	// The host's scratch directories hold something the task must not
	// see, and the task's files must not appear in them.
	for _, d := range []string{"/tmp", "/var/tmp"} {
		f, err := os.CreateTemp(d, "vpcnet-host-")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { os.Remove(f.Name()) })
	}

	rep := sandboxOf(t, v, hidden)
	t.Run("namespaces", func(t *testing.T) {
		if rep.PID != 1 {
			t.Errorf("the task's command is pid %d, want 1 (its own PID namespace)", rep.PID)
		}
		for _, kind := range []string{"mnt", "pid", "uts", "ipc", "net"} {
			if rep.Namespaces[kind] == "" || rep.Namespaces[kind] == hostNamespace(t, self, kind) {
				t.Errorf("%s namespace %q: want one of its own, not the host's", kind, rep.Namespaces[kind])
			}
		}
		if len(rep.Hostname) != 12 {
			t.Errorf("hostname %q, want the task's short ID", rep.Hostname)
		}
	})
	t.Run("capabilities", func(t *testing.T) {
		if rep.CapEff != capMask(defaultCaps) {
			t.Errorf("CapEff %#x, want a container runtime's default %#x", rep.CapEff, capMask(defaultCaps))
		}
		for _, c := range []int{capNetAdmin, capSysAdmin, capSysPtrace, capSysModule} {
			if rep.CapEff&(1<<c) != 0 {
				t.Errorf("CapEff %#x has %s", rep.CapEff, capNames[c])
			}
		}
		if rep.NoNewPrivs != "1" {
			t.Errorf("NoNewPrivs %q, want 1", rep.NoNewPrivs)
		}
		if !strings.Contains(rep.DelBlackhole, "not permitted") {
			t.Errorf("deleting the blackhole to 169.254.169.254: %q, want refused", rep.DelBlackhole)
		}
	})
	t.Run("instance metadata", func(t *testing.T) {
		if strings.HasPrefix(rep.Credentials, "ok") {
			t.Errorf("the task read instance credentials: %s", rep.Credentials)
		}
		// The instance itself does reach them: the block is the task's.
		if out, err := v.OnInstance(1, probeBin(t), probeCommand, "get", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"); err != nil {
			t.Errorf("credentials from the instance: %v: %s", err, out)
		}
	})
	t.Run("state hidden", func(t *testing.T) {
		for _, h := range hidden {
			if got := rep.Visible[h]; len(got) != 0 {
				t.Errorf("the task sees %v in %s", got, h)
			}
			// The host has something there: hiding it is not vacuous.
			if entries, _ := os.ReadDir(h); len(entries) == 0 {
				t.Errorf("the host has nothing in %s either", h)
			}
		}
	})
	t.Run("host secrets and scratch", func(t *testing.T) {
		for _, f := range secretFiles {
			if b, err := os.ReadFile(f); err != nil || len(b) == 0 {
				t.Fatalf("the host's %s: %v (%d bytes): the check would be vacuous", f, err, len(b))
			}
			if got := rep.Secrets[f]; got != "0 bytes" && !strings.Contains(got, "denied") {
				t.Errorf("the task read the host's %s: %s", f, got)
			}
		}
		for _, d := range []string{"/tmp", "/var/tmp"} {
			got := rep.Scratch[d]
			if want := []string{"", scratchFile(rep.Hostname)}; !slices.Equal(got, want) {
				t.Errorf("%s in the task: write error and entries %q, want %q (a scratch directory of its own, writable)", d, got, want)
			}
			if _, err := os.Stat(filepath.Join(d, scratchFile(rep.Hostname))); !os.IsNotExist(err) {
				t.Errorf("the task's file in %s is on the host (%v)", d, err)
			}
		}
	})
	t.Run("cap-add", func(t *testing.T) {
		rep := sandboxOf(t, v, nil, "--cap-add", "net_admin")
		if rep.CapEff != capMask(defaultCaps)|1<<capNetAdmin {
			t.Errorf("with --cap-add net_admin, CapEff %#x, want the default and NET_ADMIN", rep.CapEff)
		}
		if rep.DelBlackhole != "" {
			t.Errorf("with NET_ADMIN, deleting the blackhole failed: %s", rep.DelBlackhole)
		}
		if out, err := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--cap-add", "NET_ADMINS", "--", "true").CombinedOutput(); err == nil || !strings.Contains(string(out), "NET_ADMINS") {
			t.Errorf("--cap-add NET_ADMINS: %v: %s", err, out)
		}
	})
	t.Run("privileged", func(t *testing.T) {
		// What --privileged gives away (README): every capability vpcnet
		// holds, the blackhole; what it keeps: the host's secrets masked
		// and a scratch of the task's own.
		rep := sandboxOf(t, v, nil, "--privileged")
		if rep.CapEff&(1<<capNetAdmin) == 0 || rep.CapEff&(1<<capSysAdmin) == 0 || rep.NoNewPrivs != "0" {
			t.Errorf("with --privileged: CapEff %#x, NoNewPrivs %q; want NET_ADMIN, SYS_ADMIN and no no_new_privs", rep.CapEff, rep.NoNewPrivs)
		}
		if rep.DelBlackhole != "" {
			t.Errorf("with --privileged, deleting the blackhole failed: %s", rep.DelBlackhole)
		}
		for _, f := range secretFiles {
			if got := rep.Secrets[f]; got != "0 bytes" && !strings.Contains(got, "denied") {
				t.Errorf("a privileged task read the host's %s: %s", f, got)
			}
		}
		if got, want := rep.Scratch["/tmp"], []string{"", scratchFile(rep.Hostname)}; !slices.Equal(got, want) {
			t.Errorf("/tmp in a privileged task: %q, want %q", got, want)
		}
	})
	t.Run("exec", func(t *testing.T) {
		release := releaseFile(t)
		t.Cleanup(func() { _ = writeFile(release) })
		id := v.detach(1, v.subnet(1), "", "", probeBin(t), probeCommand, "wait", release)
		r := v.record(id)
		rep := parseSandbox(t, v.mustTask("exec", append([]string{id, "--", probeBin(t), probeCommand, "sandbox"}, hidden...)...))
		for _, kind := range []string{"mnt", "pid", "uts", "ipc", "net"} {
			if want := hostNamespace(t, fmt.Sprint(r.PID), kind); rep.Namespaces[kind] != want {
				t.Errorf("exec: %s namespace %s, want the task's %s", kind, rep.Namespaces[kind], want)
			}
		}
		if rep.PID == 1 || rep.CapEff != capMask(defaultCaps) || rep.NoNewPrivs != "1" || rep.DelBlackhole == "" {
			t.Errorf("exec: pid %d, CapEff %#x, NoNewPrivs %s, blackhole delete %q; want another pid than 1 and the task's limits", rep.PID, rep.CapEff, rep.NoNewPrivs, rep.DelBlackhole)
		}
		for _, h := range hidden {
			if len(rep.Visible[h]) != 0 {
				t.Errorf("exec sees %v in %s", rep.Visible[h], h)
			}
		}
		v.mustTask("stop", id)
	})
	v.assertClean(1)
}

// TestMetadataSpoofing: a privileged task that takes another task's
// metadata-bridge address and MAC still cannot read that task's metadata:
// the endpoint checks the bridge port the request came in by.
func TestMetadataSpoofing(t *testing.T) {
	v := upVPC(t, tagSandbox, "--instances", "1")
	probe := probeBin(t)
	release := releaseFile(t)
	t.Cleanup(func() { _ = writeFile(release) })
	suffix := testenv.RandomHex(3)
	victim := v.detach(1, v.subnet(1), "", "victim-"+suffix, probe, probeCommand, "wait", release)
	attacker := v.mustTask("run", "--instance", "1", "--subnet", v.subnet(1), "--detach", "--privileged", "--", probe, probeCommand, "wait", release)
	attacker = strings.TrimSpace(attacker)
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	get := func(id, url string) (string, error) {
		out, err := v.task("exec", id, "--", probe, probeCommand, "get", url).CombinedOutput()
		return string(out), err
	}
	endpoint := fmt.Sprintf("http://%s/v4", EndpointAddr)

	// Both reach their own metadata first: the endpoint works.
	victimENI := v.record(victim).ENIID
	for _, id := range []string{victim, attacker} {
		if out, err := get(id, endpoint); err != nil || !strings.Contains(out, v.record(id).ENIID) {
			t.Fatalf("task %s's own metadata: %v: %s", ShortID(id), err, out)
		}
	}
	vaddr := v.record(victim).BridgeAddr
	vmac := strings.TrimSpace(v.mustTask("exec", victim, "--", "cat", "/sys/class/net/"+bridgeIfName+"/address"))
	for _, args := range [][]string{
		{"link", "set", bridgeIfName, "down"},
		{"addr", "flush", "dev", bridgeIfName},
		{"link", "set", bridgeIfName, "address", vmac},
		{"addr", "add", netip.PrefixFrom(vaddr, bridgeSubnet.Bits()).String(), "dev", bridgeIfName},
		{"link", "set", bridgeIfName, "up"},
		{"route", "replace", EndpointAddr.String() + "/32", "via", bridgeGateway.String(), "dev", bridgeIfName},
	} {
		v.mustTask("exec", append([]string{attacker, "--", ip}, args...)...)
	}
	if out := v.mustTask("exec", attacker, "--", ip, "addr", "show", bridgeIfName); !strings.Contains(out, vaddr.String()+"/") || !strings.Contains(out, vmac) {
		t.Fatalf("the attacker did not take the victim's address %s and MAC %s:\n%s", vaddr, vmac, out)
	}
	for _, url := range []string{endpoint, endpoint + "/" + victim, endpoint + "/" + victim + "/task"} {
		out, err := get(attacker, url)
		if err == nil || strings.Contains(out, victimENI) {
			t.Errorf("the attacker with the victim's address and MAC, GET %s: %v: %s; want it refused", url, err, out)
		}
	}
	_ = writeFile(release)
	v.mustTask("stop", victim)
	v.mustTask("stop", attacker)
	v.assertClean(1)
}
