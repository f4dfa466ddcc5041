package netops_test

import (
	"errors"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestVethFixedNameAndMAC: a pair created with a fixed host name and MAC
// has them from birth and no label; a second pair with that host name is
// refused with ErrHostNameTaken (not ErrNameTaken, which is about the
// peer), and the first is untouched.
func TestVethFixedNameAndMAC(t *testing.T) {
	host := testenv.NewNS(t, "netops")
	ctr := testenv.NewNS(t, "netops")
	other := testenv.NewNS(t, "netops")
	mac := net.HardwareAddr{0x02, 0xaa, 0xbb, 0x01, 0x02, 0x03}
	spec := netops.VethSpec{HostName: "vbrfixed", HostMAC: mac, PeerNS: ctr, PeerName: "eth7", MTU: 1500}
	err := host.Do(func(ns.NetNS) error {
		v, err := netops.CreateVeth(spec)
		if err != nil {
			return err
		}
		if v.Name != "vbrfixed" || v.HardwareAddr.String() != mac.String() || v.Alias != "" {
			t.Errorf("host end: name %s mac %s alias %q", v.Name, v.HardwareAddr, v.Alias)
		}
		again := spec
		again.PeerNS, again.PeerName = other, "eth8"
		if _, err := netops.CreateVeth(again); !errors.Is(err, netops.ErrHostNameTaken) || errors.Is(err, netops.ErrNameTaken) {
			t.Errorf("second pair with the same host name: %v, want ErrHostNameTaken", err)
		}
		l, err := netlink.LinkByName("vbrfixed")
		if err != nil {
			return err
		}
		if l.Attrs().Index != v.Index {
			t.Error("the failed creation replaced the first pair")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if testLink(t, other, "eth8") {
		t.Error("the refused pair left its peer behind")
	}
}

// TestLabelVeth: both ends get the label; a link with the peer's name that
// is not the peer is refused and left unlabelled.
func TestLabelVeth(t *testing.T) {
	host := testenv.NewNS(t, "netops")
	ctr := testenv.NewNS(t, "netops")
	err := host.Do(func(ns.NetNS) error {
		a, err := netops.CreateVeth(netops.VethSpec{HostName: "vtsta", PeerNS: ctr, PeerName: "eth1", MTU: 1500})
		if err != nil {
			return err
		}
		b, err := netops.CreateVeth(netops.VethSpec{HostName: "vtstb", PeerNS: ctr, PeerName: "eth2", MTU: 1500})
		if err != nil {
			return err
		}
		if err := netops.LabelVeth(a, "owner a", ctr, "eth1"); err != nil {
			return err
		}
		if err := netops.LabelVeth(b, "owner b", ctr, "eth1"); err == nil {
			t.Error("LabelVeth labelled eth1, which is not the peer of vtstb")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		for name, want := range map[string]string{"eth1": "owner a", "eth2": ""} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if l.Attrs().Alias != want {
				t.Errorf("%s has alias %q, want %q", name, l.Attrs().Alias, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testLink(t *testing.T, n ns.NetNS, name string) bool {
	t.Helper()
	found := false
	err := n.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
