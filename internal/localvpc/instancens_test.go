package localvpc_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// hostMounts is the host's mount table, each line "mount point fstype
// root", which a remount would change and a mount ID would not.
func hostMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 0 || sep+1 >= len(f) {
			t.Fatalf("mountinfo line %q", line)
		}
		out = append(out, f[4]+" "+f[sep+1]+" "+f[3])
	}
	slices.Sort(out)
	return out
}

// ours keeps the mounts the local VPC called name could have made or
// leaked: those in its state directory, its namespaces' pins, and anything
// in the directories its instances have their own of. Other tests on the
// machine pin namespaces and run VPCs at the same time: theirs are left
// out.
func ours(mounts []string, name string) []string {
	var out []string
	for _, m := range mounts {
		point, _, _ := strings.Cut(m, " ")
		switch {
		case strings.HasPrefix(point, "/run/netns/"):
			if !strings.HasPrefix(point, "/run/netns/"+name+"-") {
				continue
			}
		case strings.HasPrefix(point, localvpc.BaseStateDir+"/"):
			if !strings.HasPrefix(point, localvpc.StateDir(name)+"/") && point != localvpc.StateDir(name) {
				continue
			}
		default:
			if !slices.ContainsFunc(localvpc.PrivateDirs, func(d string) bool { return point == d || strings.HasPrefix(point, d+"/") }) {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

// TestInstancesHaveTheirOwnFiles writes the same paths on two instances:
// each sees its own, the host sees neither, while named network namespaces
// stay one set for all; a restart keeps the files; down leaves the host's
// mount table as it was.
func TestInstancesHaveTheirOwnFiles(t *testing.T) {
	testenv.Tool(t, "ip")
	all := hostMounts(t)
	v := up(t, tagFiles)
	before := ours(all, v.Name)
	file := v.Name + "-x"
	paths := []string{"/run/vpcnet/" + file, "/var/run/vpcnet/" + file + "-var", "/var/lib/foo/" + file, "/var/log/" + file,
		"/etc/cni/net.d/" + file, "/opt/cni/bin/" + file}
	t.Cleanup(func() {
		for _, p := range paths {
			os.Remove(p) // only if the test failed: the host has none
		}
	})
	for n := 1; n <= 2; n++ {
		for _, p := range paths {
			v.MustOnInstance(n, "sh", "-c", `mkdir -p "$(dirname "$1")" && echo "instance $2" > "$1"`, "sh", p, string(rune('0'+n)))
		}
	}
	for n := 1; n <= 2; n++ {
		for _, p := range paths {
			if got, want := v.MustOnInstance(n, "cat", p), "instance "+string(rune('0'+n))+"\n"; got != want {
				t.Errorf("instance %d reads %q from %s, want %q", n, got, p, want)
			}
		}
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the host sees %s of an instance (%v)", p, err)
		}
	}
	// Only pins of the VPC's own namespaces and its state directory were
	// mounted on the host: nothing an instance mounted reached it.
	for _, m := range ours(hostMounts(t), v.Name) {
		if !slices.Contains(before, m) && !strings.HasPrefix(m, "/run/netns/"+v.Name+"-") && !strings.HasPrefix(m, localvpc.StateDir(v.Name)+"/") {
			t.Errorf("mount on the host while the VPC is up: %s", m)
		}
	}

	// Named network namespaces are shared: one pinned on an instance is
	// the host's and the other instance's, and deleting it on the host
	// deletes it everywhere.
	netnsName := testenv.NSPrefix + nsTag + "-" + testenv.RandomHex(4)
	t.Cleanup(func() { _ = netops.DeleteNamedNS(netnsName) })
	v.MustOnInstance(1, "ip", "netns", "add", netnsName)
	if _, err := os.Stat(netops.NamedNSPath(netnsName)); err != nil {
		t.Errorf("a namespace pinned on instance 1 is not on the host: %v", err)
	}
	if out := v.MustOnInstance(2, "ip", "netns", "list"); !strings.Contains(out, netnsName) {
		t.Errorf("a namespace pinned on instance 1 is not on instance 2:\n%s", out)
	}
	if err := netops.DeleteNamedNS(netnsName); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 2; n++ {
		if out := v.MustOnInstance(n, "cat", "/proc/self/mountinfo"); strings.Contains(out, netnsName) {
			t.Errorf("instance %d still holds %s after the host deleted it:\n%s", n, netnsName, out)
		}
	}

	v.Vpcnet("local", "restart", "--name", v.Name)
	if got := v.MustOnInstance(1, "cat", paths[0]); got != "instance 1\n" {
		t.Errorf("after a restart instance 1 reads %q from %s", got, paths[0])
	}

	v.Vpcnet("local", "down", "--name", v.Name)
	if after := ours(hostMounts(t), v.Name); !slices.Equal(after, before) {
		t.Errorf("mounts changed by up and down:\n%s", testenv.LineDiff(strings.Join(before, "\n"), strings.Join(after, "\n")))
	}
}

// TestCrashedVPCLeavesNoMounts kills a control plane with SIGKILL and takes
// the VPC down: the instances' mount namespaces go with it.
func TestCrashedVPCLeavesNoMounts(t *testing.T) {
	all := hostMounts(t)
	v := up(t, tagFiles)
	before := ours(all, v.Name)
	pins := 0
	for _, m := range ours(hostMounts(t), v.Name) {
		if strings.HasPrefix(m, localvpc.StateDir(v.Name)+"/") && strings.Contains(m, " nsfs ") {
			pins++
		}
	}
	if pins != len(v.Instances) {
		t.Fatalf("%d mount namespace pins for %d instances", pins, len(v.Instances))
	}
	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, "the killed control plane is dead", converge, func() bool { return !proc.Alive(v.PID) })
	v.Vpcnet("local", "down", "--name", v.Name)
	if after := ours(hostMounts(t), v.Name); !slices.Equal(after, before) {
		t.Errorf("mounts left by a crashed VPC after down:\n%s", testenv.LineDiff(strings.Join(before, "\n"), strings.Join(after, "\n")))
	}
	if _, err := os.Stat(filepath.Join(localvpc.StateDir(v.Name))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory after down: %v", err)
	}
}

// TestKubernetesNode: `--kubernetes-node` turns forwarding on and
// reverse-path filtering loose inside every instance, and nowhere else.
func TestKubernetesNode(t *testing.T) {
	host := map[string]string{}
	sysctls := []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"}
	for _, s := range sysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		host[s] = strings.TrimSpace(string(b))
	}
	plain := up(t, tagFiles)
	if got := strings.TrimSpace(plain.MustOnInstance(1, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
		t.Errorf("ip_forward on an instance without --kubernetes-node: %s, want 0", got)
	}
	node := up(t, tagFiles, "--kubernetes-node")
	want := map[string]string{sysctls[0]: "1", sysctls[1]: "2", sysctls[2]: "2"}
	for n := 1; n <= 2; n++ {
		for _, s := range sysctls {
			if got := strings.TrimSpace(node.MustOnInstance(n, "cat", "/proc/sys/"+s)); got != want[s] {
				t.Errorf("%s on instance %d: %s, want %s", s, n, got, want[s])
			}
		}
	}
	if !node.Instances[0].KubernetesNode {
		t.Errorf("control.json does not say the instances are Kubernetes nodes")
	}
	for _, s := range sysctls {
		b, _ := os.ReadFile("/proc/sys/" + s)
		if got := strings.TrimSpace(string(b)); got != host[s] {
			t.Errorf("%s of the host changed from %s to %s", s, host[s], got)
		}
	}
}
