package netops_test

import (
	"net"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestMain(m *testing.M) {
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
