package vpcbridge

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestRoutedIsolation: on a host that forwards IPv4, a task that routes
// the bridge subnet via the gateway still cannot reach another task: the
// host drops the packets it would route back into the bridge, and the
// rule's counter shows it. The control: with the bridge taken out of the
// nftables set, the same connection succeeds, so the host does forward;
// the next ADD puts the bridge back.
func TestRoutedIsolation(t *testing.T) {
	h := newHost(t)
	err := h.do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
	if err != nil {
		t.Fatal(err)
	}
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	path := cniPath(t)
	var tasks []*task
	for _, id := range []string{"routed-a", "routed-b"} {
		tk := &task{ns: testenv.NewNS(t, tag)}
		tk.c = call{netns: tk.ns.Path(), containerID: id, ifName: "eth1", conf: conf, path: path}
		r, err := h.add(tk.c)
		if err != nil {
			t.Fatal(err)
		}
		tk.ip = containerIP(t, r)
		tasks = append(tasks, tk)
	}
	a, b := tasks[0], tasks[1]
	var ln net.Listener
	err = b.ns.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", b.ip.String()+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go greet(ln, "task-b")
	target := ln.Addr().String()

	// Both tasks route the subnet through the gateway (b, for its replies).
	_, sub, _ := net.ParseCIDR(subnet)
	for _, tk := range tasks {
		err := tk.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth1")
			if err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Gw: net.ParseIP(gatewayIP)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// The verdict is the rule's counter: once it has counted a packet of
	// the dial, the packet was dropped (a drop is final), and the dial can
	// only time out.
	refused := func(when string) {
		t.Helper()
		before := h.droppedPackets(t)
		counted := func() (bool, error) { return h.droppedPackets(t) > before, nil }
		if err := blocked(a.ns, target, counted); err != nil {
			t.Fatalf("%s: task a dialling task b through the gateway: %v", when, err)
		}
		if after := h.droppedPackets(t); after <= before {
			t.Errorf("%s: the dial failed but the rule's counter stayed at %d: something else stopped it", when, after)
		}
	}
	refused("after ADD")
	// What the host serves is not forwarded and stays reachable.
	h.reachesEndpoint(a.ns)

	h.removeL3Isolation(t)
	if got, err := dial(a.ns, target); err != nil || got != "task-b" {
		t.Fatalf("control failed: with the bridge out of the set, the host should route task a to task b: %q, %v", got, err)
	}

	c := &task{ns: testenv.NewNS(t, tag)}
	c.c = call{netns: c.ns.Path(), containerID: "routed-c", ifName: "eth1", conf: conf, path: path}
	if _, err := h.add(c.c); err != nil {
		t.Fatal(err)
	}
	refused("after the next ADD")

	// What an operator sees.
	out := testenv.Run(t, testenv.Tool(t, "ip"), "netns", "exec", testenv.NSName(h.ns), testenv.Tool(t, "nft"), "list", "table", "inet", nftTableName)
	for _, want := range []string{
		"type ifname . ifname",
		`"` + bridgeName + `" . "` + bridgeName + `"`,
		"type filter hook forward priority filter; policy accept;",
		"iifname . oifname @" + nftSetName + " counter packets",
		"drop",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list table inet %s lacks %q:\n%s", nftTableName, want, out)
		}
	}
}

// droppedPackets reads the counter of the isolation rule in the host.
func (h *host) droppedPackets(t testing.TB) uint64 {
	t.Helper()
	rules := h.isolationRules(t)
	if len(rules) != 1 {
		t.Fatalf("the forward chain has %d rules, want 1", len(rules))
	}
	for _, e := range rules[0].Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets
		}
	}
	t.Fatal("the isolation rule has no counter")
	return 0
}

// isolationRules lists the rules of vpc-bridge's forward chain in the host.
func (h *host) isolationRules(t testing.TB) []*nftables.Rule {
	t.Helper()
	var rules []*nftables.Rule
	err := h.do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		rules, err = c.GetRules(nftTable, nftChain)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// isolatedBridges lists the bridges in vpc-bridge's nftables set in the host.
func (h *host) isolatedBridges(t testing.TB) []string {
	t.Helper()
	var names []string
	err := h.do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		elems, err := c.GetSetElements(newNftSet())
		for _, e := range elems {
			names = append(names, string(bytes.TrimRight(e.Key[:16], "\x00"))+"."+string(bytes.TrimRight(e.Key[16:], "\x00")))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}
