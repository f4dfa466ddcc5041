// Package netops is vpcnet's boundary with the Linux network stack: named
// network namespaces, finding and moving links, veths, bridges, addresses
// and routes, and the desired-state diffs of routes and neighbour entries.
// Everything that asks the kernel to change the network goes through here, so
// the plugins, the task launcher, the node agent and the local VPC share one
// way of doing each thing. Its API speaks netip (netip.Addr, netip.Prefix);
// net.IP and net.IPNet, the types of netlink and of CNI results, appear only
// in its converters (convert.go). Entering a namespace is always done with
// github.com/containernetworking/plugins/pkg/ns (ns.WithNetNSPath or
// NetNS.Do), which pins the OS thread for the duration of the call.
package netops

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces live, as `ip netns` keeps them.
const NetnsDir = "/var/run/netns"

// NamedNSPath returns the bind-mount path of the named namespace.
func NamedNSPath(name string) string { return filepath.Join(NetnsDir, name) }

var mountNetnsDirOnce sync.Once

// prepareNetnsDir makes NetnsDir a shared mount point, as iproute2 does, so
// namespaces mounted there are visible to other mount namespaces (containers
// and `ip netns exec`).
func prepareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", NetnsDir, err)
	}
	var err error
	mountNetnsDirOnce.Do(func() {
		if e := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); e == nil {
			return
		} else if !errors.Is(e, unix.EINVAL) {
			err = fmt.Errorf("failed to make %s a shared mount: %w", NetnsDir, e)
			return
		}
		// Not yet a mount point: bind it onto itself first.
		if e := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); e != nil {
			err = fmt.Errorf("failed to bind-mount %s onto itself: %w", NetnsDir, e)
			return
		}
		if e := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); e != nil {
			err = fmt.Errorf("failed to make %s a shared mount: %w", NetnsDir, e)
		}
	})
	return err
}

// CreateNamedNS creates a new network namespace and pins it at
// NetnsDir/name, where `ip netns` and CNI runtimes find it. It fails with an
// error wrapping os.ErrExist if the name is taken.
func CreateNamedNS(name string) (ns.NetNS, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("invalid namespace name %q", name)
	}
	if err := prepareNetnsDir(); err != nil {
		return nil, err
	}
	path := NamedNSPath(name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("failed to create namespace mount point %s: %w", path, err)
	}
	f.Close()

	// Unshare on a locked thread, pin the new namespace, then put the
	// thread back where it was before unlocking it. Letting the thread end
	// instead is not enough: when the goroutine runs on Go's main thread,
	// the runtime parks that thread for good rather than ending it, and it
	// would hold the new namespace alive after DeleteNamedNS.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := ns.GetCurrentNS()
		if err != nil {
			errc <- fmt.Errorf("failed to open the current namespace: %w", err)
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("failed to unshare network namespace: %w", err)
			runtime.UnlockOSThread()
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		mountErr := unix.Mount(self, path, "none", unix.MS_BIND, "")
		if err := orig.Set(); err != nil {
			// Stay locked: the thread ends with the goroutine.
			errc <- errors.Join(mountErr, fmt.Errorf("failed to return to the original namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			mountErr = fmt.Errorf("failed to bind-mount namespace at %s: %w", path, mountErr)
		}
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, err
	}
	return ns.GetNS(path)
}

// EnsureNamedNS returns the named namespace, creating it if it is missing.
func EnsureNamedNS(name string) (ns.NetNS, error) {
	n, err := ns.GetNS(NamedNSPath(name))
	if err == nil {
		return n, nil
	}
	n, err = CreateNamedNS(name)
	if errors.Is(err, os.ErrExist) {
		// Lost a race with another creator, or a stale mount point file
		// without a namespace behind it.
		if n, err2 := ns.GetNS(NamedNSPath(name)); err2 == nil {
			return n, nil
		}
		if err := DeleteNamedNS(name); err != nil {
			return nil, err
		}
		return CreateNamedNS(name)
	}
	return n, err
}

// DeleteNamedNS unpins the named namespace. The namespace itself, and every
// link in it, goes away when the last process and file descriptor holding it
// do. A namespace that does not exist is not an error.
func DeleteNamedNS(name string) error {
	path := NamedNSPath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to unmount namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove namespace mount point %s: %w", path, err)
	}
	return nil
}

// LoopbackUp brings lo up in the namespace n.
func LoopbackUp(n ns.NetNS) error {
	return n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("failed to find lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("failed to set lo up: %w", err)
		}
		return nil
	})
}

// ListNamedNS returns the names of the named namespaces that start with
// prefix, for cleaning up what a crashed run left behind.
func ListNamedNS(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", NetnsDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
