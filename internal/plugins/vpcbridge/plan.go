package vpcbridge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// attachment is the key of one ADD within a network: what the host end of
// its veth is labelled with, so DEL and GC find it from the host alone.
type attachment struct {
	network string
	cni.Attachment
}

// aliasPrefix starts the alias of every host veth this plugin creates.
const aliasPrefix = "vpc-bridge "

// maxAlias is the longest alias the kernel stores (IFALIASZ less the NUL).
const maxAlias = 255

// networkAliasPrefix starts the aliases of the veths of one network, so that
// a GC of one network never touches another's.
func networkAliasPrefix(network string) string { return aliasPrefix + network + " " }

// alias is the host veth's label: network, container ID and ifname separated
// by spaces, which none of them may contain. A container ID too long for the
// kernel's limit is replaced by its hash.
func (a attachment) alias() string {
	s := networkAliasPrefix(a.network) + a.ContainerID + " " + a.IfName
	if len(s) <= maxAlias {
		return s
	}
	sum := sha256.Sum256([]byte(a.ContainerID))
	return networkAliasPrefix(a.network) + "sha256:" + hex.EncodeToString(sum[:]) + " " + a.IfName
}

// Indexes of the interfaces in the result.
const (
	bridgeIndex    = 0
	hostVethIndex  = 1
	containerIndex = 2
)

// scopeLink marks a route to a directly attached destination (RT_SCOPE_LINK).
var scopeLink = int(unix.RT_SCOPE_LINK)

// containerPlan is what the container and the bridge get, derived from the
// IPAM result: addresses, the bridge's gateway addresses, and routes.
type containerPlan struct {
	ips      []*current.IPConfig
	gateways []*net.IPNet // on the bridge, with the prefix of the address they serve
	// routes in the container: first an on-link host route to each gateway,
	// then the IPAM's routes, each through its family's gateway.
	routes []*types.Route
	dns    types.DNS
}

// planContainer checks the IPAM result and derives the plan. Every address
// needs a gateway (the bridge answers for it); the connected subnet route is
// never part of the plan: only the gateways and the IPAM's destinations are
// reachable, so containers on one bridge cannot reach each other.
func planContainer(ipamType string, r *current.Result) (*containerPlan, error) {
	if len(r.IPs) == 0 {
		return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned no IP address", ipamType)
	}
	p := &containerPlan{dns: r.DNS}
	familyGW := map[int]net.IP{}
	seenGW := map[string]bool{}
	for _, ipc := range r.IPs {
		if ipc.Address.IP == nil || ipc.Address.Mask == nil {
			return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned an address without a prefix length: %v", ipamType, ipc.Address)
		}
		if ipc.Gateway == nil {
			return nil, cni.FieldError("ipam", "IPAM plugin %q returned %s without a gateway; the bridge needs one: configure a gateway in the ipam section", ipamType, ipc.Address.String())
		}
		fam := family(ipc.Address.IP)
		if family(ipc.Gateway) != fam {
			return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned gateway %s for %s, of another IP family", ipamType, ipc.Gateway, ipc.Address.String())
		}
		c := *ipc
		c.Interface = current.Int(containerIndex)
		p.ips = append(p.ips, &c)
		if _, ok := familyGW[fam]; !ok {
			familyGW[fam] = ipc.Gateway
		}
		if !seenGW[ipc.Gateway.String()] {
			seenGW[ipc.Gateway.String()] = true
			p.gateways = append(p.gateways, &net.IPNet{IP: hostIP(ipc.Gateway), Mask: ipc.Address.Mask})
			p.routes = append(p.routes, &types.Route{Dst: *netops.HostPrefix(ipc.Gateway), Scope: &scopeLink})
		}
	}
	for _, r := range r.Routes {
		rt := *r
		if rt.GW == nil {
			gw, ok := familyGW[family(rt.Dst.IP)]
			if !ok {
				return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned route %s but no address of its family", ipamType, rt.Dst.String())
			}
			rt.GW = gw
		}
		p.routes = append(p.routes, &rt)
	}
	return p, nil
}

// family is unix.AF_INET or unix.AF_INET6.
func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// hostIP is ip in its shortest form, so that masks and lengths agree.
func hostIP(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// iface describes a link for the result.
type iface struct {
	name, mac, sandbox string
}

// buildResult is the ADD's result: the bridge, the host veth, the container
// veth (with its namespace), the addresses on the container veth and the
// routes in the container.
func buildResult(bridge, host, container iface, p *containerPlan) *current.Result {
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			bridgeIndex:    {Name: bridge.name, Mac: bridge.mac},
			hostVethIndex:  {Name: host.name, Mac: host.mac},
			containerIndex: {Name: container.name, Mac: container.mac, Sandbox: container.sandbox},
		},
		IPs:    p.ips,
		Routes: p.routes,
		DNS:    p.dns,
	}
}

// String describes a plan in logs.
func (p *containerPlan) String() string {
	var b strings.Builder
	for _, ipc := range p.ips {
		fmt.Fprintf(&b, "address %s gateway %s; ", ipc.Address.String(), ipc.Gateway)
	}
	for _, r := range p.routes {
		fmt.Fprintf(&b, "route %s; ", describeRoute(r))
	}
	return strings.TrimSuffix(b.String(), "; ")
}
