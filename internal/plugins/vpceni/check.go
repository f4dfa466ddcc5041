package vpceni

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// eniState is the ENI in the container as CHECK sees it, or as it should
// be: plain values, so that comparing them needs no kernel.
type eniState struct {
	Name       string
	MAC        string
	Up         bool
	MTU        int // 0: not checked
	Addresses  []netip.Prefix
	Routes     []route
	Blackholes []netip.Prefix
}

// route is a main-table route out of the ENI; GW is invalid for an on-link
// route.
type route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

func (r route) String() string {
	if !r.GW.IsValid() {
		return r.Dst.String() + " on-link"
	}
	return r.Dst.String() + " via " + r.GW.String()
}

// instanceMetadata are the addresses of the instance metadata service,
// IPv4 and IPv6, that blockInstanceMetadata blackholes.
var instanceMetadata = []netip.Prefix{
	netip.MustParsePrefix("169.254.169.254/32"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// expectedState derives what CHECK must find from the config and the
// prevResult of the ADD: the interface named ifName with the config's MAC,
// the prevResult's addresses on it and its routes via the config's
// gateways, the on-link routes those need, and the blackholes.
func expectedState(conf *Config, prev *types100.Result, ifName string) (eniState, error) {
	// In a chain, a later plugin may add interfaces too (even a host-side
	// one with the same name): the ENI is the one in the sandbox.
	index := slices.IndexFunc(prev.Interfaces, func(i *types100.Interface) bool { return i.Name == ifName && i.Sandbox != "" })
	if index < 0 {
		return eniState{}, fmt.Errorf("prevResult lists no interface named %s", ifName)
	}
	iface := prev.Interfaces[index]
	if mac, err := net.ParseMAC(iface.Mac); err != nil || mac.String() != conf.MAC.String() {
		return eniState{}, fmt.Errorf("prevResult gives interface %s the MAC %q, the config's mac is %s", ifName, iface.Mac, conf.MAC)
	}
	want := eniState{Name: ifName, MAC: conf.MAC.String(), Up: !conf.StayDown}
	if conf.StayDown {
		return want, nil
	}
	want.MTU = conf.MTU
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != index {
			continue
		}
		if p := netops.PrefixOf(&ip.Address); p.IsValid() {
			want.Addresses = append(want.Addresses, p)
		}
	}
	for _, r := range prev.Routes {
		gw := netops.AddrOf(r.GW)
		if !gw.IsValid() || !slices.Contains(conf.Gateways, gw) {
			continue // another plugin's route
		}
		dst := netops.PrefixOf(&r.Dst)
		if !dst.IsValid() {
			continue
		}
		want.Routes = append(want.Routes, route{Dst: dst, GW: gw})
		if netops.NeedsOnLinkRoute(gw, want.Addresses) {
			want.Routes = append(want.Routes, route{Dst: netops.HostPrefix(gw)})
		}
	}
	if conf.BlockInstanceMetadata {
		want.Blackholes = instanceMetadata
	}
	return want, nil
}

// compareState lists, one sentence each, how got falls short of want.
// Extra addresses or routes are not faults: other plugins in a chain may
// add them.
func compareState(want, got eniState) []string {
	var problems []string
	if got.Name != want.Name {
		problems = append(problems, fmt.Sprintf("the ENI (MAC %s) is named %s in the container, not %s", want.MAC, got.Name, want.Name))
	}
	if got.Up != want.Up {
		state := map[bool]string{true: "up", false: "down"}
		problems = append(problems, fmt.Sprintf("%s is %s, want %s", got.Name, state[got.Up], state[want.Up]))
	}
	if want.MTU != 0 && got.MTU != want.MTU {
		problems = append(problems, fmt.Sprintf("%s has MTU %d, the config says %d", got.Name, got.MTU, want.MTU))
	}
	for _, a := range want.Addresses {
		if !slices.Contains(got.Addresses, a) {
			problems = append(problems, fmt.Sprintf("address %s is missing from %s", a, got.Name))
		}
	}
	for _, r := range want.Routes {
		if !slices.Contains(got.Routes, r) {
			problems = append(problems, fmt.Sprintf("route %s is missing from %s", r, got.Name))
		}
	}
	for _, b := range want.Blackholes {
		if !slices.Contains(got.Blackholes, b) {
			problems = append(problems, fmt.Sprintf("blackhole route to %s is missing (blockInstanceMetadata)", b))
		}
	}
	return problems
}
