package netops

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ExecIn replaces the current process with argv running in the network
// namespace at nsPath, and nothing else changed: unlike `ip netns exec` it
// keeps the mount namespace, so namespaces the program pins under
// /var/run/netns are visible to everyone else. It returns only on failure.
func ExecIn(nsPath string, argv, env []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	target, err := ns.GetNS(nsPath)
	if err != nil {
		return fmt.Errorf("failed to open namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	// execve keeps the namespaces of the thread that calls it, and ends all
	// the others: lock this goroutine to its thread, move the thread, exec.
	runtime.LockOSThread()
	if err := target.Set(); err != nil {
		return fmt.Errorf("failed to enter namespace %s: %w", nsPath, err)
	}
	return syscall.Exec(path, argv, env)
}

// StartIn starts cmd in the network namespace at nsPath: the child is
// forked from a thread inside it, so it inherits the namespace.
func StartIn(nsPath string, cmd *exec.Cmd) error {
	return ns.WithNetNSPath(nsPath, func(ns.NetNS) error { return cmd.Start() })
}
