package netops_test

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestBridgeMAC(t *testing.T) {
	a, b := netops.BridgeMAC("ecs-bridge"), netops.BridgeMAC("vpcbr0")
	if a.String() != netops.BridgeMAC("ecs-bridge").String() {
		t.Error("BridgeMAC is not stable")
	}
	if a.String() == b.String() {
		t.Error("two bridge names share a MAC")
	}
	for _, m := range []net.HardwareAddr{a, b} {
		if len(m) != 6 || m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Errorf("%s is not a locally administered unicast MAC", m)
		}
	}
}

// TestEnsureBridgeConcurrent: callers racing to create one bridge all get
// it, with the static MAC, the MTU and up; a bridge made by someone else
// is adopted and given the static MAC.
func TestEnsureBridgeConcurrent(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	const callers = 16
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = n.Do(func(ns.NetNS) error {
				_, err := netops.EnsureBridge("br-race", 1400)
				return err
			})
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("EnsureBridge: %v", err)
		}
	}
	err := n.Do(func(ns.NetNS) error {
		br, err := netops.LookupBridge("br-race")
		if err != nil {
			return err
		}
		if br.HardwareAddr.String() != netops.BridgeMAC("br-race").String() || br.MTU != 1400 || br.Flags&net.FlagUp == 0 {
			t.Errorf("bridge: mac %s mtu %d flags %v", br.HardwareAddr, br.MTU, br.Flags)
		}

		attrs := netlink.NewLinkAttrs()
		attrs.Name = "br-foreign"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return err
		}
		adopted, err := netops.EnsureBridge("br-foreign", 9000)
		if err != nil {
			return err
		}
		if adopted.HardwareAddr.String() != netops.BridgeMAC("br-foreign").String() || adopted.MTU != 1500 {
			t.Errorf("adopted bridge: mac %s mtu %d (want the static MAC and its own MTU)", adopted.HardwareAddr, adopted.MTU)
		}

		attrs = netlink.NewLinkAttrs()
		attrs.Name = "not-a-br"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "not-a-br-p"}); err != nil {
			return err
		}
		if _, err := netops.EnsureBridge("not-a-br", 1500); err == nil {
			t.Error("EnsureBridge adopted a veth")
		}
		if _, err := netops.LookupBridge("missing"); !errors.Is(err, netops.ErrLinkNotFound) {
			t.Errorf("LookupBridge of a missing bridge: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVethOnBridge creates a veth into another namespace, attaches it as
// an isolated port, finds it by alias, and deletes it twice.
func TestVethOnBridge(t *testing.T) {
	host := testenv.NewNS(t, "netops")
	ctr := testenv.NewNS(t, "netops")
	spec := netops.VethSpec{HostPrefix: "tst", PeerNS: ctr, PeerName: "eth9", MTU: 1400}
	err := host.Do(func(ns.NetNS) error {
		br, err := netops.EnsureBridge("br0", 1500)
		if err != nil {
			return err
		}
		v, err := netops.CreateVeth(spec)
		if err != nil {
			return err
		}
		if v.Alias != "" || v.MTU != 1400 || len(v.Name) > 15 || v.Name[:3] != "tst" {
			t.Errorf("host end: %+v", v.Attrs())
		}
		if _, err := netops.CreateVeth(spec); !errors.Is(err, netops.ErrNameTaken) {
			t.Errorf("second veth with the same peer name: %v, want ErrNameTaken", err)
		}
		if err := netops.LabelVeth(v, "test veth c1", ctr, "eth9"); err != nil {
			return err
		}
		if err := ctr.Do(func(ns.NetNS) error {
			peer, err := netlink.LinkByName("eth9")
			if err == nil && peer.Attrs().MTU != 1400 {
				t.Errorf("peer MTU %d", peer.Attrs().MTU)
			}
			return err
		}); err != nil {
			return err
		}
		if err := netops.AttachToBridge(v, br, true); err != nil {
			return err
		}
		found, err := netops.LinksByAliasPrefix("test veth ")
		if err != nil {
			return err
		}
		if len(found) != 1 || found[0].Attrs().Name != v.Name || found[0].Attrs().MasterIndex != br.Index || found[0].Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("by alias: %v", found)
		}
		pi, err := netlink.LinkGetProtinfo(found[0])
		if err != nil {
			return err
		}
		if !pi.Isolated {
			t.Error("port is not isolated")
		}
		ports, err := netops.BridgePorts(br)
		if err != nil || len(ports) != 1 {
			t.Errorf("BridgePorts = %v, %v", ports, err)
		}
		if deleted, err := netops.DeleteLink(v); !deleted || err != nil {
			t.Errorf("DeleteLink = %v, %v", deleted, err)
		}
		if deleted, err := netops.DeleteLink(v); deleted || err != nil {
			t.Errorf("second DeleteLink = %v, %v, want false, nil", deleted, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth9"); err == nil {
			t.Error("peer survived the deletion of the host end")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
