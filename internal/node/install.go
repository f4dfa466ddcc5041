package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
)

// InstallPlugins are the CNI plugins InstallCNI copies when none are named:
// vpc-pod, which it requires, and the reference plugins a conflist may
// chain after it, where the image carries them.
var InstallPlugins = struct {
	Required []string
	Optional []string
}{
	Required: []string{"vpc-pod"},
	Optional: []string{"portmap", "bandwidth", "loopback"},
}

// InstallCNI copies CNI plugin binaries from the directory from into to
// (the node's /opt/cni/bin, mounted into the DaemonSet's init container),
// each replaced whole so that a kubelet running the old binary at that
// moment, or starting the new one, never sees half a file. names are the
// plugins to copy, all required; none given: InstallPlugins. It returns
// what it installed.
func InstallCNI(from, to string, names []string) ([]string, error) {
	required, optional := names, []string(nil)
	if len(names) == 0 {
		required, optional = InstallPlugins.Required, InstallPlugins.Optional
	}
	var installed []string
	for _, n := range append(append([]string{}, required...), optional...) {
		if n != filepath.Base(n) || n == "." || n == ".." {
			return installed, fmt.Errorf("plugin name %q: a file name, not a path", n)
		}
		src := filepath.Join(from, n)
		data, err := os.ReadFile(src)
		if errors.Is(err, fs.ErrNotExist) && !slices.Contains(required, n) {
			continue
		}
		if err != nil {
			return installed, fmt.Errorf("read plugin %s: %w", n, err)
		}
		if fi, err := os.Stat(src); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return installed, fmt.Errorf("plugin %s: %s is not an executable file", n, src)
		}
		if err := atomicfile.Write(filepath.Join(to, n), data, 0o755, 0o755); err != nil {
			return installed, fmt.Errorf("install plugin %s: %w", n, err)
		}
		installed = append(installed, n)
	}
	return installed, nil
}
