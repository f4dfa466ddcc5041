package localvpc

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one line of /proc/PID/mountinfo: what the instance mount
// namespaces need to know of a mount.
type mount struct {
	Point  string // where it is mounted, unescaped
	FSType string
	// Shared is the peer group ("shared:N"), 0 when the mount is not
	// shared; Master the group it receives from ("master:N"), 0 if none.
	Shared, Master int
}

// parseMountinfo reads the format of proc(5) mountinfo: ID, parent ID,
// major:minor, root, mount point, options, optional fields up to "-", then
// the filesystem type.
func parseMountinfo(text string) ([]mount, error) {
	var out []mount
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 6 || sep+1 >= len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		m := mount{Point: unescapeMountinfo(f[4]), FSType: f[sep+1]}
		for _, opt := range f[6:sep] {
			k, v, _ := strings.Cut(opt, ":")
			n, _ := strconv.Atoi(v)
			switch k {
			case "shared":
				m.Shared = n
			case "master":
				m.Master = n
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readMountinfo lists the mounts of the calling thread's mount namespace.
func readMountinfo() ([]mount, error) {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("failed to read the mount table: %w", err)
	}
	return parseMountinfo(string(b))
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// unmountWithin detaches every mount at or below dir in the calling
// thread's mount namespace, deepest first. Nothing mounted is not an error.
func unmountWithin(dir string) error {
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	var points []string
	for _, m := range mounts {
		if within(m.Point, dir) {
			points = append(points, m.Point)
		}
	}
	// Deepest first; a point mounted twice appears twice and is unmounted
	// twice.
	slices.SortStableFunc(points, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	var errs []string
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Sprintf("%s: %v", p, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("failed to unmount under %s: %s", dir, strings.Join(errs, "; "))
	}
	return nil
}

// resolveDir is dir with its symbolic links resolved (/var/run is /run on
// most systems), created first if it is missing.
func resolveDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("failed to resolve %s: %w", dir, err)
	}
	return real, nil
}
