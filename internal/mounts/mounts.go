// Package mounts reads the kernel's mount table (proc(5) mountinfo) and
// detaches the mounts below a directory: what the local VPC's instance
// file systems, the task sandbox and the end-to-end harness need of it.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of mountinfo.
type Mount struct {
	Point  string // where it is mounted, unescaped
	FSType string
	// Shared is the peer group ("shared:N"), 0 when the mount is not
	// shared; Master the group it receives from ("master:N"), 0 if none.
	Shared, Master int
}

// Parse reads the format of proc(5) mountinfo: ID, parent ID, major:minor,
// root, mount point, options, optional fields up to "-", then the file
// system type. A malformed line is left out and reported in the error, so
// a caller may be strict (fail) or lenient (use what parsed).
func Parse(text string) ([]Mount, error) {
	var out []Mount
	var bad []string
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 6 || sep+1 >= len(f) {
			bad = append(bad, fmt.Sprintf("%q", line))
			continue
		}
		m := Mount{Point: unescape(f[4]), FSType: f[sep+1]}
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
	if len(bad) > 0 {
		return out, fmt.Errorf("malformed mountinfo line %s", strings.Join(bad, ", "))
	}
	return out, nil
}

// Read lists the mounts of the calling thread's mount namespace (a thread
// may have entered another than its process's).
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("failed to read the mount table: %w", err)
	}
	return Parse(string(b))
}

// unescape undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in a mountinfo path.
func unescape(s string) string {
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

// Within reports whether path is dir or below it.
func Within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// UnmountWithin detaches every mount at or below dir in the calling
// thread's mount namespace, deepest first. Nothing mounted is not an error.
func UnmountWithin(dir string) error {
	all, err := Read()
	if err != nil {
		return err
	}
	var points []string
	for _, m := range all {
		if Within(m.Point, dir) {
			points = append(points, m.Point)
		}
	}
	// Deepest first; a point mounted twice appears twice and is unmounted
	// twice.
	slices.SortStableFunc(points, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("failed to unmount under %s: %w", dir, errors.Join(errs...))
	}
	return nil
}
