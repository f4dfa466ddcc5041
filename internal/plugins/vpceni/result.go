package vpceni

import (
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/netops"
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
		ip := &types100.IPConfig{Interface: types100.Int(index), Address: *netops.IPNet(p)}
		if gw, ok := gatewayFor(conf.Gateways, p.Addr()); ok {
			ip.Gateway = netops.IP(gw)
		}
		res.IPs = append(res.IPs, ip)
	}
	for _, gw := range conf.Gateways {
		res.Routes = append(res.Routes, &types.Route{Dst: *netops.IPNet(netops.DefaultDestination(gw)), GW: netops.IP(gw)})
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
