package netops_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestPermanentNeighbor sets the gateway entry of a routed pod, sets it
// again with another MAC (it is replaced, not doubled), and deletes it
// twice.
func TestPermanentNeighbor(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eth0")
	gw := netip.MustParseAddr("169.254.1.1")
	macs := []net.HardwareAddr{{0x02, 0, 0, 0, 0, 1}, {0x02, 0, 0, 0, 0, 2}}
	err := n.Do(func(ns.NetNS) error {
		for _, mac := range macs {
			for range 2 {
				if err := netops.SetPermanentNeighbor(link, gw, mac); err != nil {
					return err
				}
			}
			got, err := netops.Neighbors(link)
			if err != nil {
				return err
			}
			var found []netops.Neighbor
			for _, e := range got {
				if e.IP == gw {
					found = append(found, e)
				}
			}
			if len(found) != 1 || found[0].MAC.String() != mac.String() || !found[0].Permanent {
				t.Errorf("entries for %s = %+v, want one permanent -> %s", gw, found, mac)
			}
		}
		for range 2 {
			if err := netops.DeleteNeighbor(link, gw); err != nil {
				return err
			}
		}
		got, err := netops.Neighbors(link)
		if err != nil {
			return err
		}
		for _, e := range got {
			if e.IP == gw {
				t.Errorf("entry still there after delete: %+v", e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
