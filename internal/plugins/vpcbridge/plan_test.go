package vpcbridge

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
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
			for _, ipc := range p.ips {
				if ipc.Interface == nil || *ipc.Interface != containerIndex {
					t.Errorf("address %s does not point at the container interface", ipc.Address.String())
				}
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
	addr := cidr("169.254.172.5/22")
	ipn := func(s string) *net.IPNet { n := cidr(s); return &n }
	gw := net.ParseIP("169.254.172.1")
	want := []*types.Route{
		{Dst: cidr("169.254.172.1/32"), Scope: &scopeLink},
		{Dst: cidr("169.254.170.2/32"), GW: gw},
	}
	good := []netlink.Route{
		{Dst: ipn("169.254.172.1/32")},
		{Dst: ipn("169.254.170.2/32"), Gw: gw.To4()},
	}
	if p := missingAddrs([]net.IPNet{addr}, []*net.IPNet{ipn("169.254.172.5/22")}); len(p) != 0 {
		t.Errorf("present address reported: %v", p)
	}
	if p := missingAddrs([]net.IPNet{addr}, []*net.IPNet{ipn("169.254.172.5/24")}); len(p) != 1 {
		t.Errorf("address with another prefix length not reported: %v", p)
	}
	if p := missingRoutes(want, good); len(p) != 0 {
		t.Errorf("present routes reported: %v", p)
	}
	if p := missingRoutes(want, good[:1]); len(p) != 1 || !strings.Contains(p[0], "169.254.170.2/32 via 169.254.172.1") {
		t.Errorf("missing endpoint route: %v", p)
	}
	wrongGW := []netlink.Route{good[0], {Dst: ipn("169.254.170.2/32"), Gw: net.ParseIP("169.254.172.9")}}
	if p := missingRoutes(want, wrongGW); len(p) != 1 {
		t.Errorf("route via another gateway not reported: %v", p)
	}
	if p := subnetRoutes([]net.IPNet{addr}, good); len(p) != 0 {
		t.Errorf("subnet route reported where there is none: %v", p)
	}
	withSubnet := append(good, netlink.Route{Dst: ipn("169.254.172.0/22")})
	if p := subnetRoutes([]net.IPNet{addr}, withSubnet); len(p) != 1 {
		t.Errorf("subnet route not reported: %v", p)
	}
}
