package fabric

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// moveToTask moves the ENI device with MAC m out of instance namespace
// inst into a new task namespace as eth0 and configures it there, as the
// vpc-eni plugin does. It returns the task namespace; deleting it destroys
// the device.
func moveToTask(t *testing.T, inst string, m net.HardwareAddr, addr netip.Prefix, gw netip.Addr) ns.NetNS {
	t.Helper()
	task := testenv.NewNS(t, "fabric")
	in(t, inst, func() error {
		l, err := netops.LinkByMAC(m)
		if err != nil {
			return err
		}
		_, err = netops.MoveLink(l, task, "eth0")
		return err
	})
	addAddr(t, testenv.NSName(task), "eth0", addr)
	in(t, testenv.NSName(task), func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: netops.IPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.AsSlice()})
	})
	return task
}

// deleteNS drops every reference the test holds to n; the kernel then
// destroys it, and the veths in it, asynchronously.
func deleteNS(t *testing.T, n ns.NetNS) {
	t.Helper()
	name := testenv.NSName(n)
	n.Close()
	if err := netops.DeleteNamedNS(name); err != nil {
		t.Fatal(err)
	}
}

// linkIn returns the link named dev in namespace nsName, or nil.
func linkIn(t *testing.T, nsName, dev string) netlink.Link {
	t.Helper()
	var l netlink.Link
	in(t, nsName, func() error {
		var err error
		l, err = netlink.LinkByName(dev)
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return nil
		}
		return err
	})
	return l
}

func hasIPv4(t *testing.T, nsName string, l netlink.Link) bool {
	t.Helper()
	var as []netlink.Addr
	in(t, nsName, func() (err error) {
		as, err = netlink.AddrList(l, netlink.FAMILY_V4)
		return err
	})
	return len(as) > 0
}

// TestWatchAndRecover runs the awsvpc flow: a secondary ENI moved into a
// task namespace and used there; the task namespace deleted, taking the
// device with it; Watch reporting it; Apply bringing it back as eth1 in
// its instance, down and unconfigured. A deliberate detach is not reported,
// and a lost primary ENI comes back configured.
func TestWatchAndRecover(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i3, i4 := v.instanceNS("i-1"), v.instanceNS("i-3"), v.instanceNS("i-4")
	w, err := NewWatcher(v.spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	lost := make(chan string, 10)
	ran := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { ran <- w.Run(ctx, func(id string) { lost <- id }) }()
	nextLost := func() string {
		t.Helper()
		select {
		case id := <-lost:
			return id
		case <-time.After(patience):
			t.Fatal("Watch reported no lost device")
			return ""
		}
	}

	// eth1 of i-1 (eni-04, subnet-b) moves into a task and serves there.
	task := moveToTask(t, i1, mac(4), netip.MustParsePrefix("10.0.1.40/24"), netip.MustParseAddr("10.0.1.1"))
	var l net.Listener
	in(t, testenv.NSName(task), func() (err error) {
		l, err = net.Listen("tcp", ":5000")
		return err
	})
	go answer(l, "task")
	reach(t, i3, none, "10.0.1.40:5000", "task 10.0.0.30")
	if linkIn(t, i1, "eth1") != nil {
		t.Fatal("eth1 still in i-1 after the move")
	}

	l.Close()
	deleteNS(t, task)
	if id := nextLost(); id != "eni-04" {
		t.Fatalf("Watch reported %s, want eni-04", id)
	}
	v.apply()
	back := linkIn(t, i1, "eth1")
	switch {
	case back == nil:
		t.Fatal("eth1 did not come back in i-1")
	case !bytes.Equal(back.Attrs().HardwareAddr, mac(4)):
		t.Fatalf("eth1 came back with MAC %v, want %v", back.Attrs().HardwareAddr, mac(4))
	case back.Attrs().Flags&net.FlagUp != 0 || hasIPv4(t, i1, back):
		t.Fatalf("eth1 came back up or configured: %v", back.Attrs().Flags)
	}

	// Detaching eni-04 removes its device, and is not a loss: the next
	// report is the primary ENI of i-4, lost the same way as above.
	v.spec.Interfaces = slices.DeleteFunc(v.spec.Interfaces, func(e Interface) bool { return e.ID == "eni-04" })
	v.apply()
	if linkIn(t, i1, "eth1") != nil {
		t.Fatal("eth1 still in i-1 after eni-04 was detached")
	}
	task2 := moveToTask(t, i4, mac(5), netip.MustParsePrefix("10.0.0.60/24"), netip.MustParseAddr("10.0.0.1"))
	deleteNS(t, task2)
	if id := nextLost(); id != "eni-05" {
		t.Fatalf("Watch reported %s, want eni-05 (a detach is no loss)", id)
	}
	v.apply()
	serve(t, i4, "tcp", ":5000", "i-4")
	reach(t, i3, none, "10.0.0.60:5000", "i-4 10.0.0.30")
	reach(t, i3, none, "[fd00:a::60]:5000", "i-4 fd00:a::30")

	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// TestApplyIsIdempotent applies the same spec again: not one device, route,
// entry or rule may change (device indexes and rule handles included).
func TestApplyIsIdempotent(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	before := snapshot(t, v.spec.Name, true)
	v.apply()
	if after := snapshot(t, v.spec.Name, true); after != before {
		t.Fatalf("a second Apply changed the kernel:\n%s", testenv.LineDiff(before, after))
	}
}

// TestApplyConverges damages a running VPC in every way an interrupted
// Apply, a crash or a stray tool can, and checks one Apply restores it.
func TestApplyConverges(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	healthy := snapshot(t, v.spec.Name, false)
	fabric := FabricNamespace(v.spec.Name)
	i2, i3 := v.instanceNS("i-2"), v.instanceNS("i-3")

	in(t, fabric, func() error {
		byName := func(n string) netlink.Link {
			l, err := netlink.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		// eni-03's device is gone (so is i-3's eth0), eni-01's is down as
		// an interrupted build leaves it, eni-02 lost its route and
		// eni-05 a proxy NDP entry.
		if err := netlink.LinkDel(byName(deviceName("eni-03"))); err != nil {
			return err
		}
		if err := netlink.LinkSetDown(byName(deviceName("eni-01"))); err != nil {
			return err
		}
		if err := netlink.RouteDel(&netlink.Route{Dst: netops.IPNet(netip.MustParsePrefix("10.0.1.20/32")), Scope: netlink.SCOPE_NOWHERE}); err != nil {
			return err
		}
		if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: byName(deviceName("eni-05")).Attrs().Index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: net.ParseIP("fd00:a::30")}); err != nil {
			return fmt.Errorf("delete proxy entry: %w", err)
		}
		// A device that is no ENI's, with its end in i-2.
		inst, err := ns.GetNS(netops.NamedNSPath(i2))
		if err != nil {
			return err
		}
		defer inst.Close()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ejunk"}, PeerName: "eth7", PeerNamespace: netlink.NsFd(inst.Fd())}); err != nil {
			return err
		}
		// The fabric's own address and router settings.
		lo := byName("lo")
		if err := netlink.AddrDel(lo, &netlink.Addr{IPNet: netops.IPNet(netip.MustParsePrefix("169.254.169.254/32"))}); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/proxy_arp", []byte("0"), 0o644)
	})
	run(t, "ip", "netns", "exec", fabric, "nft", "delete", "table", "inet", tableName)
	// i-4's namespace is gone; its ENI's device goes with it, soon.
	if err := netops.DeleteNamedNS(v.instanceNS("i-4")); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, "eni-05's device to die with i-4's namespace", patience, func() bool { return linkIn(t, fabric, deviceName("eni-05")) == nil })

	v.apply()
	if got := snapshot(t, v.spec.Name, false); got != healthy {
		t.Fatalf("Apply did not restore the VPC:\n%s", testenv.LineDiff(healthy, got))
	}
	serve(t, i3, "tcp", ":5000", "i-3")
	serve(t, i2, "tcp", ":8080", "i-2")
	reach(t, v.instanceNS("i-1"), none, "10.0.0.30:5000", "i-3 10.0.0.10")
	reach(t, v.instanceNS("i-4"), none, "[fd00:a::30]:5000", "i-3 fd00:a::60")
	reach(t, i3, none, "10.0.1.20:8080", "i-2 10.0.0.30")
	reach(t, i3, none, "[fd00:b::20]:8080", "i-2 fd00:a::30")

	// The fabric namespace is unpinned while something holds it open: the
	// old fabric lives on, and so do its ENI devices in the instances.
	// Apply builds a new fabric and replaces those orphans.
	held, err := ns.GetNS(netops.NamedNSPath(fabric))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := netops.DeleteNamedNS(fabric); err != nil {
		t.Fatal(err)
	}
	v.apply()
	if got := snapshot(t, v.spec.Name, false); got != healthy {
		t.Fatalf("Apply did not rebuild the VPC around a new fabric:\n%s", testenv.LineDiff(healthy, got))
	}
	reach(t, i3, none, "[fd00:b::20]:8080", "i-2 fd00:a::30")
}

// TestDetachAttachTerminate moves an ENI to another instance and slot with
// another MTU, terminates an instance and launches one.
func TestDetachAttachTerminate(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i3 := v.instanceNS("i-1"), v.instanceNS("i-3")

	eni4 := v.eni("eni-04")
	eni4.InstanceID, eni4.DeviceIndex, eni4.MTU = "i-3", 2, 1500
	v.spec.Instances = slices.DeleteFunc(v.spec.Instances, func(i Instance) bool { return i.ID == "i-4" })
	v.spec.Interfaces = slices.DeleteFunc(v.spec.Interfaces, func(e Interface) bool { return e.ID == "eni-05" })
	v.spec.Instances = append(v.spec.Instances, Instance{ID: "i-5"})
	v.spec.Interfaces = append(v.spec.Interfaces, Interface{
		ID: "eni-06", InstanceID: "i-5", MAC: mac(6), SubnetID: subnetB.ID,
		IPv4: addrs("10.0.1.60"), SourceDestCheck: true, Groups: []string{sgDefault},
	})
	v.apply()

	if linkIn(t, i1, "eth1") != nil {
		t.Error("eth1 still in i-1 after eni-04 moved to i-3")
	}
	if l := linkIn(t, i3, "eth2"); l == nil || !bytes.Equal(l.Attrs().HardwareAddr, mac(4)) || l.Attrs().MTU != 1500 {
		t.Errorf("eth2 in i-3: %v, want eni-04's device with MTU 1500", l)
	}
	if _, err := os.Stat(netops.NamedNSPath(v.instanceNS("i-4"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace of terminated i-4: %v, want it gone", err)
	}
	serve(t, i3, "tcp", ":5000", "i-3")
	reach(t, v.instanceNS("i-5"), none, "10.0.0.30:5000", "i-3 10.0.1.60")
	blocked(t, i3, none, "10.0.0.60:5000")

	before := snapshot(t, v.spec.Name, true)
	v.apply()
	if after := snapshot(t, v.spec.Name, true); after != before {
		t.Fatalf("a second Apply changed the kernel:\n%s", testenv.LineDiff(before, after))
	}
}

// TestDestroyRestoresMachine checks that Destroy leaves the namespace list,
// the root namespace's devices and its ruleset as they were, even with a
// listener holding the fabric, on a partial VPC, and when
// nothing exists.
func TestDestroyRestoresMachine(t *testing.T) {
	t.Parallel()
	testenv.Privileged(t)
	name := vpcPrefix + testenv.RandomHex(3)
	t.Cleanup(func() { Destroy(name) })
	rootLinks := func() string {
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, l := range links {
			s = append(s, fmt.Sprintf("%d:%s", l.Attrs().Index, l.Attrs().Name))
		}
		return strings.Join(s, " ")
	}
	ours := func() []string {
		n, err := netops.ListNamedNS(name)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	linksBefore, rulesBefore := rootLinks(), run(t, "nft", "list", "ruleset")

	spec := baseSpec(name)
	if err := Apply(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(name, "tcp", "169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// What a Watcher or any socket does: hold the fabric namespace.
	held, err := ns.GetNS(netops.NamedNSPath(FabricNamespace(name)))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if len(ours()) != 5 {
		t.Fatalf("namespaces of the VPC: %v, want a fabric and 4 instances", ours())
	}

	if err := Destroy(name); err != nil {
		t.Fatal(err)
	}
	if n := ours(); len(n) != 0 {
		t.Errorf("namespaces left: %v", n)
	}
	if got := rootLinks(); got != linksBefore {
		t.Errorf("root namespace devices changed:\nbefore %s\nafter  %s", linksBefore, got)
	}
	if got := run(t, "nft", "list", "ruleset"); got != rulesBefore {
		t.Errorf("root ruleset changed:\nbefore %s\nafter  %s", rulesBefore, got)
	}
	// The held fabric lives on, but without a device: the instance ends
	// are gone with it.
	err = held.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("device %s (%s) survived Destroy in the held fabric", l.Attrs().Name, l.Attrs().Alias)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Nothing left: still fine. A fabric alone (a crash right after
	// creating it): removed.
	if err := Destroy(name); err != nil {
		t.Fatalf("Destroy of nothing: %v", err)
	}
	if _, err := netops.CreateNamedNS(FabricNamespace(name)); err != nil {
		t.Fatal(err)
	}
	if err := Destroy(name); err != nil || len(ours()) != 0 {
		t.Fatalf("Destroy of a lone fabric: %v, left %v", err, ours())
	}
}
