package localvpc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/vpcnet/vpcnet/internal/mounts"
	"github.com/vpcnet/vpcnet/internal/proc"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// An instance of a local VPC is two namespaces: a network namespace, which
// the fabric makes and wires, and a mount namespace made here, in which the
// directories where agents keep their sockets, state, logs and CNI files
// are the instance's own. Two instances can then each run a node agent, a
// containerd or a kubelet, as two EC2 instances can. Everything else (the
// binaries, /tmp, the home directories) is the machine's.
//
// The mount namespace is pinned by a bind mount of its nsfs file in the
// state directory, as `ip netns` pins network namespaces, so that it
// outlives every process in it and a restarted control plane finds it.

// PrivateDirs are the directories of which each instance has its own, empty
// at first, kept in its state directory (instances/ID/root/run,
// instances/ID/root/var-lib, ...).
var PrivateDirs = []string{"/run", "/var/run", "/var/lib", "/var/log", "/etc/cni/net.d", "/opt/cni/bin"}

// SharedDirs stay the machine's inside an instance although they lie in a
// private directory: named network namespaces. A task launched on an
// instance pins its namespace there, and the host, the other instances and
// netops.StartIn must find it; and a namespace deleted on the host must not
// live on in an instance's copy.
var SharedDirs = []string{netops.NetnsDir, "/run/netns"}

// instanceDir holds an instance's pin and private directories.
func instanceDir(stateDir, id string) string { return filepath.Join(stateDir, "instances", id) }

// MountNamespacePath is where the mount namespace of an instance is pinned.
func MountNamespacePath(stateDir, instanceID string) string {
	return filepath.Join(instanceDir(stateDir, instanceID), "mnt")
}

// InstanceHostPath is where the machine sees path (absolute, with no
// symbolic links) of an instance: under the instance's root if it lies in
// one of its private directories, else path itself.
func InstanceHostPath(stateDir, instanceID, path string) (string, error) {
	plan, err := resolvedPlan()
	if err != nil {
		return "", err
	}
	best := bind{}
	for _, b := range plan {
		if b.Source != "" && (path == b.Target || strings.HasPrefix(path, b.Target+"/")) && len(b.Target) > len(best.Target) {
			best = b
		}
	}
	if best.Source == "" {
		return path, nil
	}
	for _, b := range plan {
		if b.Source == "" && len(b.Target) > len(best.Target) && (path == b.Target || strings.HasPrefix(path, b.Target+"/")) {
			return path, nil // a shared directory inside the private one
		}
	}
	return filepath.Join(instanceDir(stateDir, instanceID), "root", best.Source, strings.TrimPrefix(path, best.Target)), nil
}

// bind is one mount that makes an instance's file system.
type bind struct {
	Target string // the directory, as the instance sees it
	// Source is a directory under the instance's root for a private
	// directory, empty for a shared one (the machine's own, mounted
	// again over the private directory that hides it).
	Source string
}

// instancePlan orders the table of an instance: each private directory
// (resolved, without duplicates: /var/run is /run on most systems) from a
// directory under the instance's root named after its path, parents before
// children, then each shared directory that a private one hides. A shared
// directory no private one covers needs nothing.
func instancePlan(private, shared []string) []bind {
	byDepth := func(dirs []string) []string {
		out := slices.Clone(dirs)
		slices.SortFunc(out, func(a, b string) int {
			if d := strings.Count(a, "/") - strings.Count(b, "/"); d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
		return slices.Compact(out)
	}
	var plan []bind
	private = byDepth(private)
	for _, p := range private {
		plan = append(plan, bind{Target: p, Source: strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", "-")})
	}
	for _, s := range byDepth(shared) {
		if slices.ContainsFunc(private, func(p string) bool { return mounts.Within(s, p) }) {
			plan = append(plan, bind{Target: s})
		}
	}
	return plan
}

// resolvedPlan is instancePlan for this machine's directories.
func resolvedPlan() ([]bind, error) {
	var private, shared []string
	for _, d := range PrivateDirs {
		r, err := resolveDir(d)
		if err != nil {
			return nil, err
		}
		private = append(private, r)
	}
	for _, d := range SharedDirs {
		r, err := resolveDir(d)
		if err != nil {
			return nil, err
		}
		shared = append(shared, r)
	}
	return instancePlan(private, shared), nil
}

// ensureInstanceMounts gives the instance its mount namespace unless it has
// one already (a restarted control plane): namespace and files are kept.
func ensureInstanceMounts(stateDir, instanceID string) error {
	pin := MountNamespacePath(stateDir, instanceID)
	if isMountNamespace(pin) {
		return nil
	}
	plan, err := resolvedPlan()
	if err != nil {
		return err
	}
	root := filepath.Join(instanceDir(stateDir, instanceID), "root")
	for _, b := range plan {
		if b.Source != "" {
			if err := os.MkdirAll(filepath.Join(root, b.Source), 0o755); err != nil {
				return fmt.Errorf("failed to create the private %s of %s: %w", b.Target, instanceID, err)
			}
		}
	}
	// A pin on a shared mount would propagate into the namespace it pins
	// (the kernel refuses that), and pins must never show up in another
	// mount namespace: keep them on a private mount of their own.
	if err := ensurePrivateMount(filepath.Join(stateDir, "instances")); err != nil {
		return err
	}
	f, err := os.OpenFile(pin, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("failed to create the mount namespace pin of %s: %w", instanceID, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread unshares its file system attributes to change its
		// mount namespace: it must never run another goroutine, so it
		// stays locked and ends with this one.
		runtime.LockOSThread()
		errc <- buildMountNamespace(root, pin, plan)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("failed to make the mount namespace of %s: %w", instanceID, err)
	}
	return nil
}

// buildMountNamespace runs on a locked thread: it moves the thread into a
// new mount namespace, makes the instance's table there, goes back and
// pins the new namespace at pin.
func buildMountNamespace(root, pin string, plan []bind) error {
	host, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		return fmt.Errorf("failed to open the current mount namespace: %w", err)
	}
	defer host.Close()
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("failed to unshare the mount namespace: %w", err)
	}
	setupErr := setupInstanceMounts(root, plan)
	self, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		setupErr = errors.Join(setupErr, fmt.Errorf("failed to open the new mount namespace: %w", err))
	} else {
		defer self.Close()
	}
	// Back on the host before pinning: a namespace can only be pinned from
	// an older one.
	if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNS); err != nil {
		return errors.Join(setupErr, fmt.Errorf("failed to return to the host's mount namespace: %w", err))
	}
	if setupErr != nil {
		return setupErr
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", self.Fd()), pin, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("failed to pin the mount namespace at %s: %w", pin, err)
	}
	return nil
}

// setupInstanceMounts runs in the instance's new mount namespace, a copy of
// the host's. Propagation first: every copied mount becomes a slave, so the
// host's later table still show up in the instance but nothing mounted
// here reaches the host. Only the shared directories stay peers of the
// host's, both ways. Then network namespaces pinned elsewhere than the
// shared directories are let go (the copy would keep them alive after
// their owner deleted them), and the private directories are mounted, with
// the shared ones mounted again inside them.
func setupInstanceMounts(root string, plan []bind) error {
	var shared []string
	for _, b := range plan {
		if b.Source == "" {
			shared = append(shared, b.Target)
		}
	}
	underShared := func(p string) bool {
		return slices.ContainsFunc(shared, func(s string) bool { return mounts.Within(p, s) })
	}
	table, err := mounts.Read()
	if err != nil {
		return err
	}
	for _, m := range table {
		if underShared(m.Point) || m.Shared == 0 {
			continue
		}
		if err := unix.Mount("", m.Point, "", unix.MS_SLAVE, ""); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("failed to make %s a slave mount: %w", m.Point, err)
		}
	}
	for _, m := range table {
		if m.FSType == "nsfs" && !underShared(m.Point) {
			_ = unix.Unmount(m.Point, unix.MNT_DETACH)
		}
	}
	if table, err = mounts.Read(); err != nil {
		return err
	}
	// The sources, opened before any of them is hidden (they are under
	// /var/lib, itself private in the end).
	fds := make([]*os.File, len(plan))
	defer func() {
		for _, f := range fds {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, b := range plan {
		src := b.Target
		if b.Source != "" {
			src = filepath.Join(root, b.Source)
			if c := covering(table, b.Target); c != nil && c.Shared != 0 {
				return fmt.Errorf("%s is on a shared mount (%s) that stayed shared", b.Target, c.Point)
			}
		} else if c := covering(table, b.Target); c == nil || c.Point != b.Target || c.Shared == 0 {
			return fmt.Errorf("%s is not a shared mount point (it should be, since the local VPC's namespaces are there)", b.Target)
		}
		f, err := os.OpenFile(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("failed to open %s: %w", src, err)
		}
		fds[i] = f
	}
	for i, b := range plan {
		flags := uintptr(unix.MS_BIND)
		if b.Source == "" {
			// Recursive: the namespaces pinned there so far come along,
			// and the new mount joins the host's peer group.
			flags |= unix.MS_REC
			if err := os.MkdirAll(b.Target, 0o755); err != nil {
				return fmt.Errorf("failed to create %s: %w", b.Target, err)
			}
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fds[i].Fd()), b.Target, "", flags, ""); err != nil {
			return fmt.Errorf("failed to mount %s: %w", b.Target, err)
		}
	}
	// What a booted system has in an empty /run.
	if err := os.MkdirAll("/run/lock", 0o1777); err != nil {
		return fmt.Errorf("failed to create /run/lock: %w", err)
	}
	return os.Chmod("/run/lock", 0o1777)
}

// covering is the mount that path is on: the last mount (the one on top)
// whose mount point is path or one of its parents.
func covering(table []mounts.Mount, path string) *mounts.Mount {
	var best *mounts.Mount
	for i := range table {
		m := &table[i]
		if mounts.Within(path, m.Point) && (best == nil || len(m.Point) >= len(best.Point)) {
			best = m
		}
	}
	return best
}

// ensurePrivateMount makes dir a mount point of its own with private
// propagation.
func ensurePrivateMount(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	table, err := mounts.Read()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(table, func(m mounts.Mount) bool { return m.Point == dir }) {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("failed to bind-mount %s onto itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("failed to make %s a private mount: %w", dir, err)
	}
	return nil
}

// isMountNamespace reports whether path holds a mount namespace (a pin).
func isMountNamespace(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNS
}

// StartOnInstance starts cmd on an instance (its ID, or its position
// 1, 2, ...) as a process of that instance: in its network namespace and its
// mount namespace, in the current directory if the instance sees it (else
// /). A nil cmd.Env becomes the environment of a process on an instance
// (InstanceEnv). This is the one way into an instance: `vpcnet local
// exec`, tests and anything else that runs "on" an instance use it.
func (c *Control) StartOnInstance(instance string, cmd *exec.Cmd) error {
	in, err := c.forInstance(instance, cmd)
	if err != nil {
		return err
	}
	mnt := in.MountNamespace
	if mnt == "" {
		mnt = MountNamespacePath(c.StateDir, in.ID)
	}
	if !isMountNamespace(mnt) {
		return fmt.Errorf("failed to start %s on %s: %s holds no mount namespace (the instance's file system is gone); `vpcnet local restart --name %s` makes it again", cmd.Path, in.ID, mnt, c.Name)
	}
	if err := onInstance(netops.NamedNSPath(in.Namespace), mnt, cmd.Start); err != nil {
		return fmt.Errorf("failed to start %s on %s: %w", cmd.Path, in.ID, err)
	}
	return nil
}

// forInstance resolves instance for a command to run there, and gives cmd
// the instance's environment (InstanceEnv) when it has none.
func (c *Control) forInstance(instance string, cmd *exec.Cmd) (InstanceInfo, error) {
	in, err := c.Instance(instance)
	if err != nil {
		return in, err
	}
	if cmd.Env == nil {
		cmd.Env = c.InstanceEnv(os.Environ(), in.ID)
	}
	return in, nil
}

// RunOnInstance starts cmd with StartOnInstance, passes the signals given
// on to it while it runs, and returns its end as a proc.ExitError.
func (c *Control) RunOnInstance(instance string, cmd *exec.Cmd, forward ...os.Signal) error {
	return proc.RunForwarding(cmd, func(cmd *exec.Cmd) error { return c.StartOnInstance(instance, cmd) }, forward...)
}

// RunInNetwork runs cmd on an instance as vpcnet's task commands run
// there: in the instance's network namespace with the machine's files
// (the task store, the OCI runtime and the CNI plugins are the machine's,
// as an EC2 instance's are its own), and the instance's environment when
// cmd.Env is nil. SIGINT and SIGTERM sent to this process are passed on,
// and cmd's end comes back as a proc.ExitError: the command that re-runs
// itself on an instance ends as that run does.
func (c *Control) RunInNetwork(instance string, cmd *exec.Cmd) error {
	in, err := c.forInstance(instance, cmd)
	if err != nil {
		return err
	}
	start := func(cmd *exec.Cmd) error { return netops.StartIn(netops.NamedNSPath(in.Namespace), cmd) }
	return proc.RunForwarding(cmd, start, syscall.SIGINT, syscall.SIGTERM)
}

// onInstance runs fn on a thread that is in the network namespace at
// netPath and the mount namespace at mntPath; processes fn starts inherit
// both.
func onInstance(netPath, mntPath string, fn func() error) error {
	netNS, err := os.Open(netPath)
	if err != nil {
		return fmt.Errorf("failed to open the instance's network namespace: %w", err)
	}
	defer netNS.Close()
	mntNS, err := os.Open(mntPath)
	if err != nil {
		return fmt.Errorf("failed to open the instance's mount namespace: %w", err)
	}
	defer mntNS.Close()
	wd, _ := unix.Getwd()
	errc := make(chan error, 1)
	go func() {
		// Locked for good: the thread gets file system attributes of its
		// own and ends with the goroutine, never running another.
		runtime.LockOSThread()
		errc <- func() error {
			hostMnt, err := os.Open("/proc/thread-self/ns/mnt")
			if err != nil {
				return err
			}
			defer hostMnt.Close()
			hostNet, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			defer hostNet.Close()
			// setns into a mount namespace needs a thread whose file
			// system attributes no other thread shares.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("failed to unshare file system attributes: %w", err)
			}
			if err := unix.Setns(int(mntNS.Fd()), unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("failed to enter the mount namespace: %w", err)
			}
			if err := unix.Setns(int(netNS.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("failed to enter the network namespace: %w", err)
			}
			if wd == "" || unix.Chdir(wd) != nil {
				_ = unix.Chdir("/")
			}
			err = fn()
			// Back where it came from, should this be Go's main
			// thread, which the runtime parks instead of ending: it
			// must not keep the instance alive.
			_ = unix.Setns(int(hostMnt.Fd()), unix.CLONE_NEWNS)
			_ = unix.Setns(int(hostNet.Fd()), unix.CLONE_NEWNET)
			return err
		}()
	}()
	return <-errc
}

// nodeSysctls are what an EKS AMI and its CNI set on a node: forwarding
// on, and reverse-path filtering loose (2), since a pod on a secondary ENI
// answers through an interface other than the one its peer's route uses.
var nodeSysctls = [][2]string{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv4/conf/all/rp_filter", "2"},
	{"net/ipv4/conf/default/rp_filter", "2"},
}

// setNodeSysctls writes nodeSysctls in the network namespace at nsPath
// (/proc/sys/net is the calling thread's namespace's).
func setNodeSysctls(nsPath string) error {
	return ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		for _, kv := range nodeSysctls {
			if err := os.WriteFile("/proc/sys/"+kv[0], []byte(kv[1]), 0o644); err != nil {
				return fmt.Errorf("failed to set %s to %s: %w", kv[0], kv[1], err)
			}
		}
		return nil
	})
}
