package vpceni

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// buildResult is what ADD reports: the ENI as an interface in the
// container, its addresses with their gateway, and a default route per
// gateway. A chained prevResult is kept and the ENI appended to it. A
// stayDown ENI has no addresses or routes to report.
func buildResult(conf *Config, prev *types100.Result, ifName, netns string) *types100.Result {
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: conf.DNS}
	if prev != nil {
		res.Interfaces = append(res.Interfaces, prev.Interfaces...)
		res.IPs = append(res.IPs, prev.IPs...)
		res.Routes = append(res.Routes, prev.Routes...)
		if dnsEmpty(conf.DNS) {
			res.DNS = prev.DNS
		}
	}
	index := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces, &types100.Interface{
		Name:    ifName,
		Mac:     conf.MAC.String(),
		Sandbox: netns,
	})
	if conf.StayDown {
		return res
	}
	for _, p := range conf.Addresses {
		ip := &types100.IPConfig{Interface: types100.Int(index), Address: ipNet(p)}
		if gw, ok := gatewayFor(conf.Gateways, p.Addr()); ok {
			ip.Gateway = ipOf(gw)
		}
		res.IPs = append(res.IPs, ip)
	}
	for _, gw := range conf.Gateways {
		res.Routes = append(res.Routes, &types.Route{Dst: defaultDst(gw), GW: ipOf(gw)})
	}
	return res
}

// gatewayFor returns the gateway of a's family.
func gatewayFor(gws []netip.Addr, a netip.Addr) (netip.Addr, bool) {
	for _, g := range gws {
		if g.Is4() == a.Is4() {
			return g, true
		}
	}
	return netip.Addr{}, false
}

func dnsEmpty(d types.DNS) bool {
	return len(d.Nameservers) == 0 && d.Domain == "" && len(d.Search) == 0 && len(d.Options) == 0
}

// ipNet converts a prefix to the address-with-mask form of CNI results and
// netlink, keeping the address's host bits.
func ipNet(p netip.Prefix) net.IPNet {
	bits := p.Addr().BitLen()
	return net.IPNet{IP: ipOf(p.Addr()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func defaultDst(gw netip.Addr) net.IPNet {
	if gw.Is4() {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// prefixOf converts the kernel's address-with-mask to a prefix.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
