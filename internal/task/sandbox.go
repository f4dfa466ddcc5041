package task

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vpcnet/vpcnet/internal/mounts"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A task's command runs as a container's process, through an OCI runtime
// (runc) and a spec generated here: its own mount, PID, UTS and IPC
// namespaces besides the task's network namespace, a container runtime's
// default capabilities, no_new_privs, and vpcnet's state out of sight.
//
// The root filesystem is the host's, read-only: every top-level directory
// and every mount under it bound one by one (never recursively, so that no
// copy of a namespace's nsfs mount is made that would keep it alive), fresh
// /proc, /dev, /sys and /run, a /tmp and /var/tmp of the task's own (tmpfs:
// what a task writes there is gone with it, and it sees nothing the host
// or another task left there), tmpfs over vpcnet's state directories, and
// the host's secrets masked (shadow files, root's and users' homes, SSH
// host keys). The host's files are what a task of the ECS
// agent's awsvpc mode would find in its image: the command a user gives
// (a binary of the host, the tests' probe) runs as it did before sandboxes,
// without an image to build.

// Sandbox is what a task may do beyond a container's defaults.
type Sandbox struct {
	// CapAdd are capabilities added to the default set ("NET_ADMIN" or
	// "CAP_NET_ADMIN").
	CapAdd []string `json:"capAdd,omitempty"`
	// Privileged gives every capability vpcnet itself has, drops
	// no_new_privs and the masks on /proc, and makes /sys writable.
	Privileged bool `json:"privileged,omitempty"`
}

// defaultCaps is the capability set containerd (and Docker) give a
// container by default. NET_ADMIN is not in it: a task cannot remove the
// blackhole route to instance metadata or change its addresses.
var defaultCaps = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYS_CHROOT",
}

// capNames are the Linux capabilities by number (capabilities(7)).
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// maskedPaths and readonlyPaths are the parts of /proc and /sys that a
// container runtime hides or makes read-only by default: kernel memory,
// keys, timers, firmware, and the knobs of the whole machine.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// ParseCaps normalises capability names ("net_admin", "CAP_NET_ADMIN")
// and refuses unknown ones, naming the flag.
func ParseCaps(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		c := strings.ToUpper(strings.TrimSpace(n))
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if !slices.Contains(capNames, c) {
			return nil, fmt.Errorf("--cap-add %q: not a Linux capability (e.g. NET_ADMIN, SYS_PTRACE)", n)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// capabilities is the capability set of a task's processes. held is the
// set vpcnet's own process has (its bounding set): a process cannot give
// what it lacks, so --privileged means everything held, and a cap-add of a
// capability not held is refused.
func (s Sandbox) capabilities(held []string) ([]string, error) {
	if s.Privileged {
		return slices.Clone(held), nil
	}
	caps := slices.Clone(defaultCaps)
	for _, c := range s.CapAdd {
		if !slices.Contains(held, c) {
			return nil, fmt.Errorf("--cap-add %s: vpcnet itself does not have it, so cannot give it", c)
		}
		if !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	sort.Strings(caps)
	return caps, nil
}

// heldCaps reads this process's bounding set from /proc/self/status.
func heldCaps() ([]string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("read this process's capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("parse CapBnd %q: %w", v, err)
			}
			return capsOf(mask), nil
		}
	}
	return nil, fmt.Errorf("no CapBnd in /proc/self/status")
}

func capsOf(mask uint64) []string {
	var out []string
	for i, n := range capNames {
		if mask&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// hostEntry is one entry of the host's root directory.
type hostEntry struct {
	Name    string
	Symlink string // target, when the entry is a symlink
}

// transient reports a mount that is not the host's own file system but
// another program's, which may vanish between reading the mount table and
// runc binding it (the task would then fail to start): namespaces (nsfs:
// a copy would also keep one alive), other containers' root file systems
// (overlay), and anything below /tmp or /var/tmp, where runtimes and
// tests mount their work and which the task gets its own of.
func transient(m hostMount) bool {
	if m.FSType == "nsfs" || m.FSType == "overlay" {
		return true
	}
	return under(m.Path, privateTmp)
}

// under reports whether path is one of dirs or below one.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// hostMount is one mount point of the host (from /proc/self/mountinfo).
type hostMount struct {
	Path   string
	FSType string
}

// freshTop are top-level directories a task gets new, never the host's.
var freshTop = []string{"proc", "sys", "dev", "run"}

// privateTmp are the scratch directories a task gets its own of: tmpfs,
// at most tmpSize each, never the host's.
var privateTmp = []string{"/tmp", "/var/tmp"}

// tmpSize bounds each private scratch directory, so that a task filling
// its /tmp cannot take the instance's memory.
const tmpSize = "256m"

// hostSecrets are host paths a task must not read though the rest of the
// host's files are visible: password hashes, the homes of root and users
// (keys, shell histories, cloud credentials), and the SSH host keys. Those
// the host has are masked (runc's maskedPaths: /dev/null over a file, an
// empty read-only tmpfs over a directory), with --privileged too.
var hostSecrets = []string{
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh", "/root", "/home",
}

// rootfsMounts returns the bind mounts that mirror the host's root
// filesystem into a task's empty rootfs, read-only, with the scratch
// directories and every path under a hidden one left out: each top-level entry of the host
// that is not a symlink, then each mount below it, shallowest first.
// Symlinks of the top level (Debian's /bin -> usr/bin) are created in the
// rootfs itself (see symlinks).
func rootfsMounts(top []hostEntry, mounts []hostMount, hidden []string) []specs.Mount {
	var out []specs.Mount
	bind := func(path string) {
		out = append(out, specs.Mount{Destination: path, Type: "bind", Source: path,
			Options: []string{"bind", "nosuid", "nodev", "ro"}})
	}
	skip := func(path string) bool {
		first := strings.Split(strings.TrimPrefix(path, "/"), "/")[0]
		return slices.Contains(freshTop, first) || under(path, hidden) || under(path, privateTmp)
	}
	for _, e := range top {
		if e.Symlink == "" && !skip("/"+e.Name) {
			bind("/" + e.Name)
		}
	}
	sorted := slices.Clone(mounts)
	sort.SliceStable(sorted, func(i, j int) bool {
		return strings.Count(sorted[i].Path, "/") < strings.Count(sorted[j].Path, "/")
	})
	for _, m := range sorted {
		if m.Path == "/" || strings.Count(m.Path, "/") < 2 || skip(m.Path) || transient(m) {
			continue
		}
		bind(m.Path)
	}
	return out
}

// tmpMounts are the task's own scratch directories, those of privateTmp
// the host has (a mount point in the read-only /var must exist already).
func tmpMounts(has []string) []specs.Mount {
	var out []specs.Mount
	for _, d := range has {
		out = append(out, specs.Mount{Destination: d, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777", "size=" + tmpSize}})
	}
	return out
}

// maskMounts hide vpcnet's state (and the namespaces under /var/run/netns,
// which /run being fresh hides already) behind empty tmpfs.
func maskMounts(hidden []string) []specs.Mount {
	var out []specs.Mount
	for _, h := range hidden {
		out = append(out, specs.Mount{Destination: h, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=0700", "size=64k"}})
	}
	return out
}

// baseMounts are a container's own /proc, /dev, /sys and /run.
func baseMounts(privileged bool) []specs.Mount {
	sys := []string{"nosuid", "noexec", "nodev", "ro"}
	if privileged {
		sys = sys[:3]
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sys},
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
	}
}

// sandboxInput is everything the OCI spec of a task depends on, so that
// building it is a pure function.
type sandboxInput struct {
	Record   *Record
	Env      []string
	Cwd      string
	HeldCaps []string
	Top      []hostEntry
	Mounts   []hostMount
	Hidden   []string // vpcnet's state directories
	Tmp      []string // the scratch directories of privateTmp the host has
	Secrets  []string // the paths of hostSecrets the host has
}

// ociSpec is the runtime spec (config.json) of a task's container.
func ociSpec(in sandboxInput) (*specs.Spec, error) {
	r := in.Record
	caps, err := r.Sandbox.capabilities(in.HeldCaps)
	if err != nil {
		return nil, err
	}
	mounts := baseMounts(r.Sandbox.Privileged)
	mounts = append(mounts, rootfsMounts(in.Top, in.Mounts, in.Hidden)...)
	mounts = append(mounts, tmpMounts(in.Tmp)...)
	mounts = append(mounts, maskMounts(in.Hidden)...)
	s := &specs.Spec{
		Version: "1.0.2",
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args:            r.Command,
			Env:             in.Env,
			Cwd:             in.Cwd,
			User:            specs.User{UID: 0, GID: 0},
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: !r.Sandbox.Privileged,
		},
		Hostname: r.ShortID(),
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: r.Netns},
			},
			// cgroupfs (no systemd here): a leaf of its own, which runc
			// removes with the container.
			CgroupsPath: "/" + containerID(r),
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			RootfsPropagation: "rprivate",
		},
	}
	s.Linux.MaskedPaths = slices.Clone(in.Secrets)
	if !r.Sandbox.Privileged {
		s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, maskedPaths...)
		s.Linux.ReadonlyPaths = readonlyPaths
	}
	return s, nil
}

// containerID is the runtime's name for a task's container.
func containerID(r *Record) string { return "vpcnet-task-" + r.ID }

// existing returns those of paths the host has.
func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// readHost lists the host's root directory and mount points, the input
// of rootfsMounts.
func readHost() ([]hostEntry, []hostMount, error) {
	entries, err := os.ReadDir("/")
	if err != nil {
		return nil, nil, fmt.Errorf("list the host's root directory: %w", err)
	}
	var top []hostEntry
	for _, e := range entries {
		he := hostEntry{Name: e.Name()}
		if e.Type()&os.ModeSymlink != 0 {
			he.Symlink, _ = os.Readlink(filepath.Join("/", e.Name()))
			if he.Symlink == "" {
				continue
			}
		}
		top = append(top, he)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, fmt.Errorf("read the host's mount points: %w", err)
	}
	return top, parseMountinfo(string(b)), nil
}

// parseMountinfo reads mount points and file system types from the
// host's mountinfo. A malformed line is skipped: the table is the kernel's,
// and one odd line must not stop a task from starting.
func parseMountinfo(s string) []hostMount {
	table, _ := mounts.Parse(s)
	out := make([]hostMount, 0, len(table))
	for _, m := range table {
		out = append(out, hostMount{Path: m.Point, FSType: m.FSType})
	}
	return out
}
