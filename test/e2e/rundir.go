package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/mounts"
	"github.com/vpcnet/vpcnet/internal/proc"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// BaseDir holds one directory per test (a "run"): generated configs,
// runtime state (containerd root, podman storage), plugin logs. Nothing
// outside it is configured, apart from what the runtimes themselves put in
// /run/netns, /var/lib/cni (libcni's result cache) and /run/containerd/s
// (shim sockets), all named after IDs they choose.
var BaseDir = filepath.Join(os.TempDir(), "vpcnet-e2e")

const ownerFile = "owner"

// cniCacheDir is libcni's default cache, used by cnitool, podman and
// containerd alike.
const cniCacheDir = "/var/lib/cni"

// RunDir is the directory of one test and the names derived from it.
type RunDir struct {
	ID   string // 8 hex characters, unique among live runs
	Path string // BaseDir/ID
}

// CgroupParent is the cgroup (cgroupfs driver, every v1 controller) under
// which the run's containers and pods are placed, so that a crashed run's
// container processes can be found and killed.
func (r *RunDir) CgroupParent() string { return "/vpcnet-e2e-" + r.ID }

// Network returns a CNI network name for the run: base-ID. libcni caches
// results as /var/lib/cni/results/<network>-<container>-<ifname>, so the ID
// in the name lets a crashed run's cache entries be found, and no two runs
// share an allocator's state by network name.
func (r *RunDir) Network(base string) string { return base + "-" + r.ID }

// File returns the path of name inside the run directory.
func (r *RunDir) File(name ...string) string {
	return filepath.Join(append([]string{r.Path}, name...)...)
}

// NewRunDir creates a run directory and removes it, and everything running
// from it or in its cgroup, when the test ends. Register runtime shutdowns
// after calling it: cleanups run last-in first-out, so the orderly shutdown
// comes first and this is the backstop.
func NewRunDir(t testing.TB) *RunDir {
	t.Helper()
	testenv.Privileged(t)
	id := testenv.RandomHex(4)
	r := &RunDir{ID: id, Path: filepath.Join(BaseDir, id)}
	if err := os.MkdirAll(r.Path, 0o755); err != nil {
		t.Fatalf("create run dir: %v", err)
	}
	owner := fmt.Sprintf("%d %d\n", os.Getpid(), proc.StartTime(os.Getpid()))
	if err := os.WriteFile(r.File(ownerFile), []byte(owner), 0o644); err != nil {
		t.Fatalf("write run owner: %v", err)
	}
	t.Cleanup(func() {
		if err := r.destroy(); err != nil {
			t.Errorf("clean run dir %s: %v", r.Path, err)
		}
	})
	return r
}

// RecordNetNS remembers a namespace that a runtime created for this run
// (/run/netns/cni-<uuid>, /run/netns/netns-<uuid>), so that a crashed run's
// are removed by CleanLeftovers.
func (r *RunDir) RecordNetNS(path string) {
	f, err := os.OpenFile(r.File("netns.list"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, path)
}

// PodUIDPrefix starts the UID of every CRI pod of the run: the CRI passes
// it to the plugins (K8S_POD_UID), and libcni keeps it in its cache.
func (r *RunDir) PodUIDPrefix() string { return "e2e-" + r.ID + "-" }

// runtimeNSPattern matches the namespaces podman (netns-UUID) and the CRI
// (cni-UUID) create, as they appear in their state databases.
var runtimeNSPattern = regexp.MustCompile(`/run/netns/((?:cni|netns)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`)

// runtimeNetNS returns the names of the namespaces the run's runtimes
// made: those recorded, and those in the runtimes' state databases (bbolt
// stores values as they are), for pods a crash left before they were
// recorded.
func (r *RunDir) runtimeNetNS() []string {
	seen := map[string]bool{}
	scan := func(b []byte) {
		for _, m := range runtimeNSPattern.FindAllSubmatch(b, -1) {
			seen[string(m[1])] = true
		}
	}
	if b, err := os.ReadFile(r.File("netns.list")); err == nil {
		scan(b)
	}
	_ = filepath.WalkDir(r.Path, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".db") {
			if b, err := os.ReadFile(p); err == nil {
				scan(b)
			}
		}
		return nil
	})
	names := make([]string, 0, len(seen))
	for n := range seen {
		if _, err := os.Stat(filepath.Join(netops.NetnsDir, n)); err == nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// CleanLeftovers removes what crashed earlier runs left: their processes
// (runtimes, shims, conmon, containers), mounts, namespaces, cgroups and
// directories, and the test namespaces tagged "e2e". Runs whose owner is
// still alive are left alone. Call it from TestMain.
func CleanLeftovers() {
	if os.Geteuid() != 0 {
		return
	}
	entries, _ := os.ReadDir(BaseDir)
	othersRunning := false
	for _, e := range entries {
		r := &RunDir{ID: e.Name(), Path: filepath.Join(BaseDir, e.Name())}
		if r.ownerAlive() {
			othersRunning = true
			continue
		}
		if err := r.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: clean leftover run %s: %v\n", r.Path, err)
		}
	}
	// The test namespaces carry no owner: leave them while another e2e
	// test process runs (its own cleanup removes them).
	if !othersRunning {
		testenv.CleanLeftovers(nsTag)
	}
}

func (r *RunDir) ownerAlive() bool {
	b, err := os.ReadFile(r.File(ownerFile))
	if err != nil {
		// Just made, owner not yet written: give it a minute.
		fi, err := os.Stat(r.Path)
		return err == nil && time.Since(fi.ModTime()) < time.Minute
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return false
	}
	// A killed owner may linger as a zombie: PID 1 here reaps slowly.
	return pid > 0 && proc.Same(pid, start)
}

// destroy kills what runs from the directory or in its cgroup, removes
// recorded namespaces, unmounts what is mounted under it, removes its
// cgroups and the directory itself.
func (r *RunDir) destroy() error {
	var errs []error
	if err := killMatching(r.Path, r.CgroupParent()); err != nil {
		errs = append(errs, err)
	}
	for _, name := range r.runtimeNetNS() {
		if err := netops.DeleteNamedNS(name); err != nil {
			errs = append(errs, err)
		}
	}
	// Left when a DEL failed or never came: the runtime keeps the result
	// to delete with. Ours name the run in the network or the pod UID.
	cached, _ := filepath.Glob(filepath.Join(cniCacheDir, "results", "*"))
	for _, f := range cached {
		b, _ := os.ReadFile(f)
		if strings.Contains(filepath.Base(f), "-"+r.ID+"-") || bytes.Contains(b, []byte(r.PodUIDPrefix())) {
			if err := os.Remove(f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := unmountUnder(r.Path); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(r.CgroupParent()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(r.Path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killMatching SIGKILLs every process (other than this one) whose command
// line mentions path or that is in cgroup (or below it) in any hierarchy,
// and waits for them to go.
func killMatching(path, cgroup string) error {
	self := os.Getpid()
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		cg, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cgroup"))
		if bytes.Contains(cmdline, []byte(path)) || bytes.Contains(cg, []byte(":"+cgroup+"/")) || bytes.Contains(cg, []byte(":"+cgroup+"\n")) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for proc.Alive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d survived SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// unmountUnder detaches every mount point at or below dir, deepest first.
func unmountUnder(dir string) error { return mounts.UnmountWithin(dir) }

// removeCgroups removes the cgroup parent (and its children, deepest first)
// from every mounted hierarchy. The processes are gone by then.
func removeCgroups(parent string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var errs []error
	for _, root := range roots {
		top := filepath.Join(root, parent)
		if fi, err := os.Stat(top); err != nil || !fi.IsDir() {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
