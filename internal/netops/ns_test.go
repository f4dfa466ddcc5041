package netops_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChildMode) == "create-delete" {
		if err := createDeleteChild(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("done")
		_, _ = io.Copy(io.Discard, os.Stdin) // live until the test is done looking
		os.Exit(0)
	}
	testenv.CleanLeftovers("netops")
	os.Exit(m.Run())
}

func TestNamedNamespaceLifecycle(t *testing.T) {
	testenv.Privileged(t)
	name := testenv.NSPrefix + "netops-" + testenv.RandomHex(4)
	n, err := netops.CreateNamedNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netops.DeleteNamedNS(name) })
	defer n.Close()
	if _, err := netops.CreateNamedNS(name); !os.IsExist(err) && err == nil {
		t.Fatalf("second create of %s: want an error, got nil", name)
	}
	again, err := netops.EnsureNamedNS(name)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	names, err := netops.ListNamedNS(name)
	if err != nil || len(names) != 1 || names[0] != name {
		t.Fatalf("ListNamedNS(%q) = %v, %v", name, names, err)
	}
	// The creating goroutine's namespace must never leak into ours.
	cur, _ := ns.GetCurrentNS()
	if cur.Path() == n.Path() {
		t.Fatal("caller was left in the new namespace")
	}
	if err := netops.DeleteNamedNS(name); err != nil {
		t.Fatal(err)
	}
	if err := netops.DeleteNamedNS(name); err != nil {
		t.Fatalf("second delete should be a no-op: %v", err)
	}
	if _, err := os.Stat(netops.NamedNSPath(name)); !os.IsNotExist(err) {
		t.Fatalf("mount point still there: %v", err)
	}
}

// TestMoveLinkAndWait moves a veth end by MAC between namespaces, into a
// namespace where its name is already taken, and waits for a link that
// appears after the wait started.
func TestMoveLinkAndWait(t *testing.T) {
	host := testenv.NewNS(t, "netops")
	ctr := testenv.NewNS(t, "netops")
	mac, _ := net.ParseMAC("02:00:00:aa:bb:01")

	err := host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: "eth1", HardwareAddr: mac},
			PeerName:  "peer1",
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// The target already has an eth1: the move must still succeed.
	err = ctr.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "other"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = host.Do(func(ns.NetNS) error {
		l, err := netops.LinkByMAC(mac)
		if err != nil {
			return err
		}
		moved, err := netops.MoveLink(l, ctr, "eth0")
		if err != nil {
			return err
		}
		if moved.Attrs().Name != "eth0" {
			t.Errorf("moved link is named %q, want eth0", moved.Attrs().Name)
		}
		if _, err := netops.LinkByMAC(mac); err == nil {
			t.Error("link still found in the host namespace after the move")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		l, err := netops.LinkByMAC(mac)
		if err != nil {
			return err
		}
		if l.Attrs().Name != "eth0" {
			t.Errorf("found %q by MAC, want eth0", l.Attrs().Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// WaitForLink: start waiting, then create the link.
	mac2, _ := net.ParseMAC("02:00:00:aa:bb:02")
	got := make(chan error, 1)
	go func() {
		l, err := netops.WaitForLink(t.Context(), host.Path(), mac2)
		if err == nil && l.Attrs().Name != "eth7" {
			err = os.ErrInvalid
		}
		got <- err
	}()
	err = host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth7", HardwareAddr: mac2}, PeerName: "peer7"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("WaitForLink: %v", err)
	}
}

// TestDeletedNamespaceDies checks that nothing of ours keeps a namespace
// alive once it is deleted: a veth pair inside it must vanish with it, as
// the local VPC and the task launcher rely on. The namespaces are made by a
// child process from its main goroutine, where the goroutine that unshares
// is most likely to run on Go's main thread, which the runtime never ends.
func TestDeletedNamespaceDies(t *testing.T) {
	watch := testenv.NewNS(t, "netops")
	// The child stays alive until its stdin closes: a wedged thread of a
	// live process is what would keep a namespace from dying.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildMode+"=create-delete", envWatchNS+"="+watch.Path())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "done\n" {
		t.Fatalf("child: %q", line)
	}
	// Each namespace held one end of a veth pair whose peer is in watch:
	// once they are all freed, no peer remains.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		_ = watch.Do(func(ns.NetNS) error {
			links, _ := netops.ListLinks()
			for _, l := range links {
				if l.Type() == "veth" {
					left = append(left, l.Attrs().Name)
				}
			}
			return nil
		})
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after deletion, %d namespace(s) are still alive (peers %v): something holds them", len(left), left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const (
	envChildMode = "VPCNET_NETOPS_TEST_CHILD"
	envWatchNS   = "VPCNET_NETOPS_TEST_WATCH"
)

// createDeleteChild is the child of TestDeletedNamespaceDies.
func createDeleteChild() error {
	watch, err := ns.GetNS(os.Getenv(envWatchNS))
	if err != nil {
		return err
	}
	defer watch.Close()
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("%snetops-child%d-%d", testenv.NSPrefix, os.Getpid(), i)
		n, err := netops.CreateNamedNS(name)
		if err != nil {
			return err
		}
		err = n.Do(func(ns.NetNS) error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a"}, PeerName: fmt.Sprintf("peer%d", i),
				PeerNamespace: netlink.NsFd(int(watch.Fd()))})
		})
		n.Close()
		if derr := netops.DeleteNamedNS(name); err == nil {
			err = derr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
