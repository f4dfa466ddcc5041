package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vpcnet/vpcnet/internal/mounts"
)

// cgroupV1Hierarchies are the mount points of this machine's cgroup
// hierarchies, from the mount table: the v1 ones (cpu, memory, the named
// systemd one ...) and, on a hybrid system, the unified one, where runc
// makes the containers' cgroups too.
func cgroupV1Hierarchies() ([]string, error) {
	table, err := mounts.Read()
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	var out []string
	for _, m := range table {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, m.Point)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// makeCgroupRoot makes root in every cgroup v1 hierarchy, as the kubelet
// wants its cgroupRoot to exist everywhere; in cpuset, a new cgroup has
// no CPUs or memory nodes until they are copied from its parent.
func makeCgroupRoot(root string) error {
	hier, err := cgroupV1Hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hier {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return fmt.Errorf("set %s of cgroup %s: %w", f, dir, err)
			}
		}
	}
	return nil
}

// killCgroupRoot SIGKILLs every process in root's cgroups (the shims and
// containers a stopped containerd left), in every hierarchy.
func killCgroupRoot(root string) {
	hier, _ := cgroupV1Hierarchies()
	for _, h := range hier {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroupRoot removes root's cgroups depth first, retrying while the
// kernel still counts the killed processes in them.
func removeCgroupRoot(root string) {
	hier, _ := cgroupV1Hierarchies()
	for _, h := range hier {
		top := filepath.Join(h, root)
		for try := 0; try < 50; try++ {
			var dirs []string
			_ = filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			if len(dirs) == 0 {
				break
			}
			slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
			for _, d := range dirs {
				_ = syscall.Rmdir(d)
			}
			if _, err := os.Stat(top); os.IsNotExist(err) {
				break
			}
			killCgroupRoot(root)
			time.Sleep(100 * time.Millisecond)
		}
	}
}
