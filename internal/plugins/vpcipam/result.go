package vpcipam

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// Result is the CNI result of an allocation: its addresses with their
// gateways, and the configured routes. It is a current (1.1.0) result;
// cni.AsVersion converts it to the config's version.
func Result(a ipam.Allocation, routes []*types.Route) *types100.Result {
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, Routes: routes}
	for _, ip := range a.IPs {
		c := &types100.IPConfig{Address: *netops.IPNet(ip.Address)}
		if ip.Gateway.IsValid() {
			c.Gateway = netops.IP(ip.Gateway)
		}
		r.IPs = append(r.IPs, c)
	}
	return r
}

// prevResult reads the result a CHECK is to verify, in any version.
func prevResult(stdin []byte) (*types100.Result, error) {
	var nc types.NetConf
	if err := cni.DecodeConfig(stdin, &nc); err != nil {
		return nil, err
	}
	return cni.PrevResult(&nc, true)
}

// CheckHeld compares what the allocation holds with the addresses of prev
// that belong to the pool (prev may carry addresses of other networks):
// both lists must be the same.
func CheckHeld(pool ipam.Pool, held ipam.Allocation, prev *types100.Result) error {
	var reported []netip.Addr
	for _, ip := range prev.IPs {
		a := netops.AddrOf(ip.Address.IP)
		if !a.IsValid() {
			continue
		}
		if slices.ContainsFunc(pool.Sets, func(s ipam.RangeSet) bool { return s.InSubnet(a) }) {
			reported = append(reported, a)
		}
	}
	var have []netip.Addr
	for _, ip := range held.IPs {
		have = append(have, ip.Address.Addr())
	}
	slices.SortFunc(reported, netip.Addr.Compare)
	slices.SortFunc(have, netip.Addr.Compare)
	if slices.Equal(reported, have) {
		return nil
	}
	return cni.FieldError("prevResult.ips", "reports %s of network %q, but %s holds %s",
		addrList(reported), pool.Network, held.Owner, addrList(have))
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "no address"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
