package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// nsTag names this package's test namespaces (TestMain, in
// agent_test.go, removes a crashed run's).
const nsTag = "node"

// veth creates a pair with ends a (in na, address addrA) and b (in nb).
func veth(t *testing.T, na ns.NetNS, a string, nb ns.NetNS, b string) {
	t.Helper()
	err := na.Do(func(ns.NetNS) error {
		_, err := netops.CreateVeth(netops.VethSpec{HostName: a, PeerNS: nb, PeerName: b})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func inNS(t *testing.T, n ns.NetNS, script ...string) {
	t.Helper()
	for _, line := range script {
		args := append([]string{"-n", testenv.NSName(n)}, strings.Fields(line)...)
		testenv.Run(t, "ip", args...)
	}
}

func linkMAC(t *testing.T, n ns.NetNS, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err == nil {
			mac = l.Attrs().HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// sourceSeen listens on addr:port in n and returns what source address the
// first connection came from.
func sourceSeen(t *testing.T, listen ns.NetNS, addr string, dial ns.NetNS) string {
	t.Helper()
	var l net.Listener
	err := listen.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(addr, "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = io.WriteString(c, "x")
		got <- host
	}()
	err = dial.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp4", l.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("connect to %s: %v", l.Addr(), err)
	}
	select {
	case src := <-got:
		return src
	case <-time.After(5 * time.Second):
		return "nothing accepted"
	}
}

// TestNodeNetworking wires a node namespace as on an instance: a primary
// ENI (eth0) towards a "VPC router" namespace that also plays a host outside
// the VPC, a secondary ENI (eth1), and a pod routed as vpc-pod routes it.
// It then checks the agent's tables, rules and SNAT by the packets' source
// addresses, and that Cleanup leaves the node as it was.
func TestNodeNetworking(t *testing.T) {
	node := testenv.NewNS(t, nsTag)
	vpc := testenv.NewNS(t, nsTag)
	pod := testenv.NewNS(t, nsTag)
	veth(t, node, "eth0", vpc, "r0")
	veth(t, node, "eth1", vpc, "r1")
	veth(t, node, "vpcpod1", pod, "eth0")
	inNS(t, vpc,
		"link set r0 up", "link set r1 up", "link set lo up",
		"addr add 10.9.0.1/24 dev r0", "addr add 10.9.1.1/24 dev r1",
		"addr add 198.51.100.10/32 dev lo")
	inNS(t, node,
		"link set eth0 up", "link set vpcpod1 up", "link set lo up",
		"addr add 10.9.0.5/24 dev eth0", "route add default via 10.9.0.1 dev eth0")
	podIP := netip.MustParseAddr("10.9.1.50") // an address of the secondary ENI
	hostMAC := linkMAC(t, node, "vpcpod1")
	inNS(t, pod,
		"link set eth0 up", "link set lo up", "addr add "+podIP.String()+"/32 dev eth0",
		"route add 169.254.1.1 dev eth0 scope link", "route add default via 169.254.1.1 dev eth0",
		"neigh add 169.254.1.1 lladdr "+hostMAC.String()+" dev eth0 nud permanent")
	// The VPC router delivers an address to the ENI that owns it, by its
	// MAC (the local VPC's fabric does the same with permanent entries).
	inNS(t, vpc, "route add "+podIP.String()+"/32 dev r1",
		"neigh add "+podIP.String()+" lladdr "+linkMAC(t, node, "eth1").String()+" dev r1 nud permanent")
	// What vpc-pod does on the node for a pod of a secondary ENI.
	inNS(t, node,
		"route add "+podIP.String()+"/32 dev vpcpod1 scope link",
		fmt.Sprintf("rule add to %s/32 lookup main priority 512 protocol %d", podIP, nodeapi.RuleProtocol),
		fmt.Sprintf("rule add from %s/32 lookup 2 priority 1536 protocol %d", podIP, nodeapi.RuleProtocol))

	// The agent brings an ENI's link up and leaves it so; IPv6 link-local
	// addresses and routes come and go with links on the kernel's own time.
	inNS(t, node, "link set eth1 up")
	linkLocal := func(_ string, ip net.IP) bool { return ip.IsLinkLocalUnicast() || ip.IsMulticast() }
	before := testenv.NetState(t, node, linkLocal)
	rulesBefore := ruleLines(t, node)

	k := &KernelNetwork{NSPath: node.Path()}
	eni := &ENI{ID: "eni-2", MAC: linkMAC(t, node, "eth1"), DeviceIndex: 1, SubnetCIDR: netip.MustParsePrefix("10.9.1.0/24")}
	host := HostNetwork{PrimaryIP: netip.MustParseAddr("10.9.0.5"), PrimaryIface: "eth0",
		VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}
	err := node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := k.WaitDevice(ctx, eni); err != nil {
			return err
		}
		if err := k.SetupENI(eni, 1500); err != nil {
			return err
		}
		// Twice: a restarted agent converges, it does not double anything.
		if err := k.SetupENI(eni, 1500); err != nil {
			return err
		}
		if err := k.SetupHost(host); err != nil {
			return err
		}
		return k.SetupHost(host)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Do(func(ns.NetNS) error { return k.Cleanup() }) })

	state := testenv.NetState(t, node, nil)
	for _, want := range []string{
		"route table=2 type=1 10.9.1.1/32 via <nil> dev eth1 scope link",
		"route table=2 type=1 0.0.0.0/0 via 10.9.1.1 dev eth1 scope universe",
	} {
		if !strings.Contains(state, want) {
			t.Errorf("node state lacks %q:\n%s", want, state)
		}
	}
	if rules := ruleLines(t, node); !strings.Contains(rules, "1024:\tnot from all to 10.9.0.0/16 lookup main") {
		t.Errorf("rules lack the off-VPC rule:\n%s", rules)
	}

	// Inside the VPC the pod keeps its own address and leaves through its
	// ENI (the router sees it on r1); outside, it is the node's address.
	if got := sourceSeen(t, vpc, "10.9.0.1", pod); got != podIP.String() {
		t.Errorf("inside the VPC the router saw source %s, want the pod's %s", got, podIP)
	}
	if got := sourceSeen(t, vpc, "198.51.100.10", pod); got != "10.9.0.5" {
		t.Errorf("outside the VPC the host saw source %s, want the node's primary 10.9.0.5 (SNAT)", got)
	}

	// External SNAT: no translation, no off-VPC rule.
	host.ExternalSNAT = true
	if err := node.Do(func(ns.NetNS) error { return k.SetupHost(host) }); err != nil {
		t.Fatal(err)
	}
	if nftHasTable(t, node) {
		t.Error("with external SNAT the agent's nftables table is still there")
	}
	if rules := ruleLines(t, node); strings.Contains(rules, "1024:") {
		t.Errorf("with external SNAT the off-VPC rule is still there:\n%s", rules)
	}

	host.ExternalSNAT = false
	err = node.Do(func(ns.NetNS) error {
		if err := k.SetupHost(host); err != nil {
			return err
		}
		return k.Cleanup()
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup removes the agent's tables and table, and the pod rules
	// (they carry the same protocol); links and addresses stay.
	after := testenv.NetState(t, node, linkLocal)
	if before != after {
		t.Errorf("cleanup left the node changed:\n%s", testenv.LineDiff(before, after))
	}
	if rules := ruleLines(t, node); strings.Contains(rules, "1024:") || strings.Contains(rules, "1536:") {
		t.Errorf("rules after cleanup:\n%s\nbefore:\n%s", rules, rulesBefore)
	}
	if nftHasTable(t, node) {
		t.Error("cleanup left the nftables table")
	}
}

func ruleLines(t *testing.T, n ns.NetNS) string {
	t.Helper()
	return testenv.Run(t, "ip", "-n", testenv.NSName(n), "rule", "show")
}

func nftHasTable(t *testing.T, n ns.NetNS) bool {
	t.Helper()
	found := false
	err := n.Do(func(ns.NetNS) error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		for _, tb := range tables {
			if tb.Name == nftNodeTable {
				found = true
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
