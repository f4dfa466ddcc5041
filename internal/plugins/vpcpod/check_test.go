package vpcpod

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// goodState is what ADD leaves for plan p: CHECK finds nothing wrong.
func goodState(a attachment, p podPlan) observed {
	var o observed
	o.host.found, o.host.veth, o.host.up = true, true, true
	o.host.alias, o.host.mtu, o.host.index, o.host.mac = a.alias(), p.mtu, 7, a.hostVethMAC()
	o.host.routes = []netops.TableRoute{{Dst: p.prefix(), LinkIndex: 7}}
	o.rules = p.rules()
	o.pod.found, o.pod.veth, o.pod.up = true, true, true
	o.pod.peerIndex, o.pod.mtu = 7, p.mtu
	o.pod.addrs = []netip.Prefix{p.prefix()}
	o.pod.routes = []netops.TableRoute{
		{Dst: podGatewayPrefix(), LinkIndex: 2},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: podGateway, LinkIndex: 2},
	}
	o.pod.neighbors = []netops.Neighbor{{IP: podGateway, MAC: a.hostVethMAC(), Permanent: true}}
	return o
}

func TestCheckProblems(t *testing.T) {
	a := newAttachment("pods", "ctr", "eth0", "vpc")
	p := podPlan{addr: netip.MustParseAddr("10.0.2.5"), table: 2, mtu: 9001}
	if got := p.problems(a, "eth0", goodState(a, p)); len(got) != 0 {
		t.Fatalf("problems in the good state: %v", got)
	}
	for _, tc := range []struct {
		name   string
		change func(o *observed)
		says   string
	}{
		{"host veth gone", func(o *observed) { o.host.found = false }, "no host veth"},
		{"host veth relabelled", func(o *observed) { o.host.alias = "someone else" }, "labelled"},
		{"host veth down", func(o *observed) { o.host.up = false }, "is down"},
		{"host MTU", func(o *observed) { o.host.mtu = 1500 }, "MTU 1500"},
		{"host route gone", func(o *observed) { o.host.routes = nil }, "no route 10.0.2.5/32"},
		{"to-rule gone", func(o *observed) { o.rules = o.rules[1:] }, `"512: from all to 10.0.2.5/32`},
		{"from-rule gone", func(o *observed) { o.rules = o.rules[:1] }, `"1536: from 10.0.2.5/32`},
		{"from-rule to another table", func(o *observed) { o.rules[1].Table = 9 }, "unexpected rule"},
		{"pod interface gone", func(o *observed) { o.pod.found = false }, "no eth0 in the pod"},
		{"not the peer", func(o *observed) { o.pod.peerIndex = 99 }, "not the peer"},
		{"pod down", func(o *observed) { o.pod.up = false }, "eth0 is down"},
		{"pod address gone", func(o *observed) { o.pod.addrs = nil }, "address 10.0.2.5/32 missing"},
		{"pod address with a subnet", func(o *observed) { o.pod.addrs = []netip.Prefix{netip.MustParsePrefix("10.0.2.5/24")} }, "address 10.0.2.5/32 missing"},
		{"gateway route gone", func(o *observed) { o.pod.routes = o.pod.routes[1:] }, "route 169.254.1.1 dev eth0 scope link missing"},
		{"default route gone", func(o *observed) { o.pod.routes = o.pod.routes[:1] }, "default route via 169.254.1.1 missing"},
		{"neighbour gone", func(o *observed) { o.pod.neighbors = nil }, "no neighbour entry"},
		{"neighbour not permanent", func(o *observed) { o.pod.neighbors[0].Permanent = false }, "not permanent"},
		{"neighbour points elsewhere", func(o *observed) { o.pod.neighbors[0].MAC = net.HardwareAddr{2, 0, 0, 0, 0, 9} }, "points at 02:00:00:00:00:09"},
	} {
		o := goodState(a, p)
		tc.change(&o)
		got := strings.Join(p.problems(a, "eth0", o), "; ")
		if !strings.Contains(got, tc.says) {
			t.Errorf("%s: problems %q, want one saying %q", tc.name, got, tc.says)
		}
	}
	// An address of the primary ENI must have no from-rule.
	primary := podPlan{addr: p.addr, mtu: 9001}
	o := goodState(a, primary)
	o.rules = p.rules()
	if got := strings.Join(primary.problems(a, "eth0", o), "; "); !strings.Contains(got, "unexpected rule \"1536") {
		t.Errorf("a from-rule for a primary-ENI address: problems %q", got)
	}
}
