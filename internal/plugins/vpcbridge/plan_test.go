package vpcbridge

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

func cidr(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestPlanContainer(t *testing.T) {
	v4 := &current.IPConfig{Address: cidr("169.254.172.5/22"), Gateway: net.ParseIP("169.254.172.1")}
	v6 := &current.IPConfig{Address: cidr("fd00:172::5/64"), Gateway: net.ParseIP("fd00:172::1")}
	endpoint := &types.Route{Dst: cidr("169.254.170.2/32")}
	endpoint6 := &types.Route{Dst: cidr("fd00:ec2::254/128")}
	viaOther := &types.Route{Dst: cidr("10.0.0.0/8"), GW: net.ParseIP("169.254.172.9")}

	cases := []struct {
		name     string
		in       *current.Result
		gateways []string
		routes   []string // dst>gw, gw "" for on-link
		code     uint     // 0: success
		msg      string
	}{
		{
			name:     "IPv4 with the endpoint route",
			in:       &current.Result{IPs: []*current.IPConfig{v4}, Routes: []*types.Route{endpoint}},
			gateways: []string{"169.254.172.1/22"},
			routes:   []string{"169.254.172.1/32>", "169.254.170.2/32>169.254.172.1"},
		},
		{
			name:     "dual stack",
			in:       &current.Result{IPs: []*current.IPConfig{v4, v6}, Routes: []*types.Route{endpoint, endpoint6}},
			gateways: []string{"169.254.172.1/22", "fd00:172::1/64"},
			routes:   []string{"169.254.172.1/32>", "fd00:172::1/128>", "169.254.170.2/32>169.254.172.1", "fd00:ec2::254/128>fd00:172::1"},
		},
		{
			name:     "route with its own gateway is kept as is",
			in:       &current.Result{IPs: []*current.IPConfig{v4}, Routes: []*types.Route{viaOther}},
			gateways: []string{"169.254.172.1/22"},
			routes:   []string{"169.254.172.1/32>", "10.0.0.0/8>169.254.172.9"},
		},
		{
			name:     "no routes: only the gateway",
			in:       &current.Result{IPs: []*current.IPConfig{v4}},
			gateways: []string{"169.254.172.1/22"},
			routes:   []string{"169.254.172.1/32>"},
		},
		{name: "no address", in: &current.Result{}, code: cni.CodeInternal, msg: "no IP address"},
		{
			name: "no gateway",
			in:   &current.Result{IPs: []*current.IPConfig{{Address: cidr("169.254.172.5/22")}}},
			code: cni.CodeInvalidConfig, msg: "without a gateway",
		},
		{
			name: "gateway of the other family",
			in:   &current.Result{IPs: []*current.IPConfig{{Address: cidr("169.254.172.5/22"), Gateway: net.ParseIP("fd00::1")}}},
			code: cni.CodeInternal, msg: "another IP family",
		},
		{
			name: "IPv6 route without an IPv6 address",
			in:   &current.Result{IPs: []*current.IPConfig{v4}, Routes: []*types.Route{endpoint6}},
			code: cni.CodeInternal, msg: "no address of its family",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := planContainer("test-ipam", c.in)
			if c.code != 0 {
				if !isCode(err, c.code) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "test-ipam") {
					t.Fatalf("got %v, want code %d naming the plugin and %q", err, c.code, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gws, routes []string
			for _, g := range p.gateways {
				gws = append(gws, g.String())
			}
			for _, r := range p.routes {
				gw := ""
				if r.GW != nil {
					gw = r.GW.String()
				}
				routes = append(routes, r.Dst.String()+">"+gw)
				if r.GW == nil && (r.Scope == nil || *r.Scope != scopeLink) {
					t.Errorf("on-link route %s has no link scope", r.Dst.String())
				}
			}
			if strings.Join(gws, " ") != strings.Join(c.gateways, " ") {
				t.Errorf("gateways %v, want %v", gws, c.gateways)
			}
			if strings.Join(routes, " ") != strings.Join(c.routes, " ") {
				t.Errorf("routes %v, want %v", routes, c.routes)
			}
			// The IPAM's result is not modified.
			for _, ipc := range c.in.IPs {
				if ipc.Interface != nil {
					t.Error("planContainer modified the IPAM result")
				}
			}
		})
	}
}

func TestAlias(t *testing.T) {
	a := attachment{network: "ecs-task-network", Attachment: cni.Attachment{ContainerID: "abc", IfName: "ecs-eth0"}}
	if got := a.alias(); got != "vpc-bridge ecs-task-network abc ecs-eth0" {
		t.Errorf("alias = %q", got)
	}
	if !strings.HasPrefix(a.alias(), networkAliasPrefix(a.network)) {
		t.Error("alias does not start with its network's prefix")
	}
	other := attachment{network: "ecs-task-network2", Attachment: a.Attachment}
	if strings.HasPrefix(other.alias(), networkAliasPrefix(a.network)) {
		t.Error("a network's prefix matches another network's alias")
	}
	long := attachment{network: "n", Attachment: cni.Attachment{ContainerID: strings.Repeat("c", 300), IfName: "eth0"}}
	l := long.alias()
	if len(l) > maxAlias || !strings.HasPrefix(l, networkAliasPrefix("n")+"sha256:") || !strings.HasSuffix(l, " eth0") {
		t.Errorf("long alias = %q (%d bytes)", l, len(l))
	}
	long2 := attachment{network: "n", Attachment: cni.Attachment{ContainerID: strings.Repeat("c", 299) + "d", IfName: "eth0"}}
	if long2.alias() == l {
		t.Error("two long container IDs share an alias")
	}
}

func TestCheckComparisons(t *testing.T) {
	addr := netip.MustParsePrefix("169.254.172.5/22")
	gw := net.ParseIP("169.254.172.1")
	want := []*types.Route{
		{Dst: cidr("169.254.172.1/32"), Scope: &scopeLink},
		{Dst: cidr("169.254.170.2/32"), GW: gw},
	}
	good := []netops.Route{
		{Dst: netip.MustParsePrefix("169.254.172.1/32")},
		{Dst: netip.MustParsePrefix("169.254.170.2/32"), Via: netip.MustParseAddr("169.254.172.1")},
	}
	if p := missingAddrs([]netip.Prefix{addr}, []netip.Prefix{netip.MustParsePrefix("169.254.172.5/22")}); len(p) != 0 {
		t.Errorf("present address reported: %v", p)
	}
	if p := missingAddrs([]netip.Prefix{addr}, []netip.Prefix{netip.MustParsePrefix("169.254.172.5/24")}); len(p) != 1 {
		t.Errorf("address with another prefix length not reported: %v", p)
	}
	if p := missingRoutes(want, good); len(p) != 0 {
		t.Errorf("present routes reported: %v", p)
	}
	if p := missingRoutes(want, good[:1]); len(p) != 1 || !strings.Contains(p[0], "169.254.170.2/32 via 169.254.172.1") {
		t.Errorf("missing endpoint route: %v", p)
	}
	wrongGW := []netops.Route{good[0], {Dst: netip.MustParsePrefix("169.254.170.2/32"), Via: netip.MustParseAddr("169.254.172.9")}}
	if p := missingRoutes(want, wrongGW); len(p) != 1 {
		t.Errorf("route via another gateway not reported: %v", p)
	}
	if p := subnetRoutes([]netip.Prefix{addr}, good); len(p) != 0 {
		t.Errorf("subnet route reported where there is none: %v", p)
	}
	withSubnet := append(good, netops.Route{Dst: netip.MustParsePrefix("169.254.172.0/22")})
	if p := subnetRoutes([]netip.Prefix{addr}, withSubnet); len(p) != 1 {
		t.Errorf("subnet route not reported: %v", p)
	}
}

// TestHostVethIdentity: the host veth's name and MAC, which the kernel
// takes at creation, are derived from the attachment: stable, distinct for
// any change of network, container or ifname, a valid interface name, a
// locally administered unicast MAC whose first half names the network.
func TestHostVethIdentity(t *testing.T) {
	a := attachment{network: "meta", Attachment: cni.Attachment{ContainerID: "c1", IfName: "eth0"}}
	variants := []attachment{
		{network: "meta2", Attachment: a.Attachment},
		{network: "meta", Attachment: cni.Attachment{ContainerID: "c2", IfName: "eth0"}},
		{network: "meta", Attachment: cni.Attachment{ContainerID: "c1", IfName: "eth1"}},
		// The fields are separated: moving a character across does not collide.
		{network: "met", Attachment: cni.Attachment{ContainerID: "ac1", IfName: "eth0"}},
	}
	if a.hostVethName() != (attachment{network: "meta", Attachment: a.Attachment}).hostVethName() {
		t.Error("the name is not stable")
	}
	if err := netops.ValidateIfName(a.hostVethName()); err != nil || !strings.HasPrefix(a.hostVethName(), hostVethPrefix) || len(a.hostVethName()) != 15 {
		t.Errorf("name %q: %v", a.hostVethName(), err)
	}
	mac := a.hostVethMAC()
	if len(mac) != 6 || mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("%s is not a locally administered unicast MAC", mac)
	}
	if !inNetwork(mac, "meta") || inNetwork(mac, "meta2") {
		t.Errorf("MAC %s: inNetwork(meta) %v, inNetwork(meta2) %v", mac, inNetwork(mac, "meta"), inNetwork(mac, "meta2"))
	}
	for _, v := range variants {
		if v.hostVethName() == a.hostVethName() {
			t.Errorf("%+v and %+v share the name %s", v, a, a.hostVethName())
		}
		if v.hostVethMAC().String() == mac.String() {
			t.Errorf("%+v and %+v share the MAC %s", v, a, mac)
		}
		if inNetwork(v.hostVethMAC(), "meta") != (v.network == "meta") {
			t.Errorf("%+v: MAC %s, inNetwork(meta) wrong", v, v.hostVethMAC())
		}
	}
}

// eniPrev is what vpc-eni returns before vpc-bridge in a chain: the ENI as
// eth0 with its address, a default route, and DNS.
func eniPrev() *current.Result {
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "eth0", Mac: "02:00:0a:4d:00:01", Sandbox: "/var/run/netns/task"}},
		IPs:        []*current.IPConfig{{Interface: current.Int(0), Address: cidr("10.77.1.5/24"), Gateway: net.ParseIP("10.77.1.1")}},
		Routes:     []*types.Route{{Dst: cidr("0.0.0.0/0"), GW: net.ParseIP("10.77.1.1")}},
		DNS:        types.DNS{Nameservers: []string{"10.77.0.2"}},
	}
}

func bridgePlan(t *testing.T) *containerPlan {
	t.Helper()
	p, err := planContainer("vpc-ipam", &current.Result{
		IPs:    []*current.IPConfig{{Address: cidr("169.254.172.5/22"), Gateway: net.ParseIP("169.254.172.1")}},
		Routes: []*types.Route{{Dst: cidr("169.254.170.2/32")}},
		DNS:    types.DNS{Nameservers: []string{"169.254.172.53"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	testBridge    = iface{name: "ecs-bridge", mac: "02:11:11:11:11:11"}
	testHostVeth  = iface{name: "vbr0123456789ab", mac: "02:22:22:22:22:22"}
	testContainer = iface{name: "ecs-eth0", mac: "02:33:33:33:33:33", sandbox: "/var/run/netns/task"}
)

// TestBuildResult: alone, vpc-bridge's result is its three interfaces with
// the address on the third; after another plugin, the prevResult comes
// first and whole, in its order, and the indexes count the merged list,
// in every spec version that has a prevResult.
func TestBuildResult(t *testing.T) {
	t.Run("alone", func(t *testing.T) {
		r := buildResult(nil, testBridge, testHostVeth, testContainer, bridgePlan(t))
		if got := ifaceNames(r); got != "ecs-bridge vbr0123456789ab ecs-eth0@/var/run/netns/task" {
			t.Errorf("interfaces %s", got)
		}
		if len(r.IPs) != 1 || *r.IPs[0].Interface != 2 || r.IPs[0].Address.String() != "169.254.172.5/22" {
			t.Errorf("IPs %v", r.IPs)
		}
		if len(r.Routes) != 2 || len(r.DNS.Nameservers) != 1 || r.DNS.Nameservers[0] != "169.254.172.53" {
			t.Errorf("routes %v DNS %v", r.Routes, r.DNS)
		}
	})
	for _, version := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run("after vpc-eni/"+version, func(t *testing.T) {
			prev := eniPrev()
			merged := buildResult(prev, testBridge, testHostVeth, testContainer, bridgePlan(t))
			if len(prev.Interfaces) != 1 || len(prev.IPs) != 1 || len(prev.Routes) != 1 {
				t.Fatal("buildResult modified the prevResult")
			}
			// Through the version and back, as the runtime and the next
			// plugin see it.
			out, err := merged.GetAsVersion(version)
			if err != nil {
				t.Fatal(err)
			}
			r, err := current.NewResultFromResult(out)
			if err != nil {
				t.Fatal(err)
			}
			if got := ifaceNames(r); got != "eth0@/var/run/netns/task ecs-bridge vbr0123456789ab ecs-eth0@/var/run/netns/task" {
				t.Errorf("interfaces %s", got)
			}
			if len(r.IPs) != 2 {
				t.Fatalf("IPs %v", r.IPs)
			}
			if ip := r.IPs[0]; *ip.Interface != 0 || ip.Address.String() != "10.77.1.5/24" {
				t.Errorf("first IP %v, want the ENI's on eth0 (the pod IP)", ip)
			}
			if ip := r.IPs[1]; *ip.Interface != 3 || ip.Address.String() != "169.254.172.5/22" {
				t.Errorf("second IP %v, want the bridge address on interface 3", ip)
			}
			var routes []string
			for _, rt := range r.Routes {
				routes = append(routes, fmt.Sprintf("%s>%v", rt.Dst.String(), rt.GW))
			}
			if want := "0.0.0.0/0>10.77.1.1 169.254.172.1/32><nil> 169.254.170.2/32>169.254.172.1"; strings.Join(routes, " ") != want {
				t.Errorf("routes %v, want %s", routes, want)
			}
			if len(r.DNS.Nameservers) != 1 || r.DNS.Nameservers[0] != "10.77.0.2" {
				t.Errorf("DNS %v, want the first plugin's", r.DNS)
			}
		})
	}
	t.Run("prevResult without DNS", func(t *testing.T) {
		prev := eniPrev()
		prev.DNS = types.DNS{}
		r := buildResult(prev, testBridge, testHostVeth, testContainer, bridgePlan(t))
		if len(r.DNS.Nameservers) != 1 || r.DNS.Nameservers[0] != "169.254.172.53" {
			t.Errorf("DNS %v, want the IPAM's", r.DNS)
		}
	})
}

func ifaceNames(r *current.Result) string {
	var names []string
	for _, i := range r.Interfaces {
		n := i.Name
		if i.Sandbox != "" {
			n += "@" + i.Sandbox
		}
		names = append(names, n)
	}
	return strings.Join(names, " ")
}

// TestOwnPart: CHECK finds vpc-bridge's interface, addresses and routes in
// a merged prevResult and leaves the earlier plugin's alone.
func TestOwnPart(t *testing.T) {
	merged := buildResult(eniPrev(), testBridge, testHostVeth, testContainer, bridgePlan(t))
	// A route of the earlier plugin that is on-link, not via a gateway.
	merged.Routes = append([]*types.Route{{Dst: cidr("10.77.9.0/24")}}, merged.Routes...)
	own, err := ownPart(merged, "ecs-eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(own.addrs) != 1 || own.addrs[0].String() != "169.254.172.5/22" || own.mac != testContainer.mac {
		t.Errorf("own addresses %v mac %s", own.addrs, own.mac)
	}
	var routes []string
	for _, r := range own.routes {
		routes = append(routes, describeRoute(r))
	}
	if want := "169.254.172.1/32 on-link|169.254.170.2/32 via 169.254.172.1"; strings.Join(routes, "|") != want {
		t.Errorf("own routes %q, want %q", routes, want)
	}
	alone := buildResult(nil, testBridge, testHostVeth, testContainer, bridgePlan(t))
	if own, err := ownPart(alone, "ecs-eth0"); err != nil || len(own.addrs) != 1 || len(own.routes) != 2 {
		t.Errorf("alone: %+v, %v", own, err)
	}
	if _, err := ownPart(eniPrev(), "ecs-eth0"); err == nil || !strings.Contains(err.Error(), "no interface ecs-eth0") {
		t.Errorf("prevResult without vpc-bridge's part: %v", err)
	}
	// The host veth has no sandbox: a name match there is not the container's.
	if _, err := ownPart(merged, testHostVeth.name); err == nil {
		t.Error("ownPart took the host veth for the container interface")
	}
}
