package fabric

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

var none netip.Addr // "any source address" for dial

// TestInstancesReachEachOther covers the routed VPC: within a subnet (proxy
// ARP and proxy NDP) and across subnets (through the gateway), IPv4 and
// IPv6, and an address nobody has.
func TestInstancesReachEachOther(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i2, i3 := v.instanceNS("i-1"), v.instanceNS("i-2"), v.instanceNS("i-3")
	serve(t, i3, "tcp", ":5000", "i-3")
	serve(t, i2, "tcp", ":8080", "i-2")

	// Same subnet, IPv4 and IPv6.
	reach(t, i1, none, "10.0.0.30:5000", "i-3 10.0.0.10")
	reach(t, i1, none, "[fd00:a::30]:5000", "i-3 fd00:a::10")
	// Across subnets, into the web group.
	reach(t, i1, none, "10.0.1.20:8080", "i-2 10.0.0.10")
	reach(t, i1, none, "[fd00:b::20]:8080", "i-2 fd00:a::10")
	reach(t, i3, none, "[fd00:b::20]:8080", "i-2 fd00:a::30")

	// The primary ENI is configured as EC2 would: address, gateway.
	in(t, i1, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if !bytes.Equal(l.Attrs().HardwareAddr, mac(1)) || l.Attrs().MTU != DefaultMTU {
			t.Errorf("eth0 of i-1: MAC %v MTU %d, want %v %d", l.Attrs().HardwareAddr, l.Attrs().MTU, mac(1), DefaultMTU)
		}
		routes, err := netlink.RouteGet(net.ParseIP("10.0.1.20"))
		if err != nil || len(routes) != 1 || !routes[0].Gw.Equal(net.ParseIP("10.0.0.1")) {
			t.Errorf("route from i-1 to 10.0.1.20: %v %v, want via 10.0.0.1", routes, err)
		}
		return nil
	})

	// 10.0.0.99 and 10.0.1.99 are configured on i-3's and i-2's devices
	// but assigned to no ENI: no route in the fabric, no ARP answer in the
	// subnet, so nothing reaches them. The source check is off on both so
	// that only routing stands in the way.
	addAddr(t, i3, "eth0", netip.MustParsePrefix("10.0.0.99/32"))
	addAddr(t, i2, "eth0", netip.MustParsePrefix("10.0.1.99/32"))
	v.eni("eni-02").SourceDestCheck = false
	v.eni("eni-03").SourceDestCheck = false
	v.apply()
	blocked(t, i1, none, "10.0.0.99:5000")
	blocked(t, i1, none, "10.0.1.99:8080")
	reach(t, i1, none, "10.0.0.30:5000", "i-3 10.0.0.10")
}

// TestSecondaryAddresses follows a secondary address through assignment,
// configuration, a move to another ENI (AllowReassignment) and
// unassignment; and delegated IPv4 and IPv6 prefixes.
func TestSecondaryAddresses(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i3, i4 := v.instanceNS("i-1"), v.instanceNS("i-3"), v.instanceNS("i-4")
	serve(t, i1, "tcp", ":5000", "i-1")
	serve(t, i4, "tcp", ":5000", "i-4")
	serve(t, i3, "tcp", ":5000", "i-3")
	sec := netip.MustParsePrefix("10.0.0.50/24")

	// Assigned but not configured on the device: the fabric delivers to
	// i-1's eth0, whose kernel does not take it.
	v.eni("eni-01").IPv4 = append(v.eni("eni-01").IPv4, sec.Addr())
	v.apply()
	blocked(t, i3, none, "10.0.0.50:5000")
	addAddr(t, i1, "eth0", sec)
	reach(t, i3, none, "10.0.0.50:5000", "i-1 10.0.0.30")
	// i-1 may use it as a source: the source check knows it.
	reach(t, i1, sec.Addr(), "10.0.0.30:5000", "i-3 10.0.0.50")

	// Move it to eni-05 (i-4). i-3 keeps its ARP entry for 10.0.0.50,
	// which points at the fabric, so only the fabric's route decides.
	v.eni("eni-01").IPv4 = v.eni("eni-01").IPv4[:1]
	v.eni("eni-05").IPv4 = append(v.eni("eni-05").IPv4, sec.Addr())
	v.apply()
	delAddr(t, i1, "eth0", sec)
	addAddr(t, i4, "eth0", sec)
	reach(t, i3, none, "10.0.0.50:5000", "i-4 10.0.0.30")

	// Unassigned: unreachable although still configured on i-4's device.
	// i-4's source check is off, so that only the fabric's routing can
	// stop the connection (the check would drop i-4's answers).
	v.eni("eni-05").IPv4 = v.eni("eni-05").IPv4[:1]
	v.eni("eni-05").SourceDestCheck = false
	v.apply()
	blocked(t, i3, none, "10.0.0.50:5000")
	reach(t, i3, none, "10.0.0.60:5000", "i-4 10.0.0.30")

	// A delegated /28 is routed to its ENI, and is a legitimate source.
	v.eni("eni-01").IPv4Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}
	v.apply()
	addAddr(t, i1, "lo", netip.MustParsePrefix("10.0.0.70/32"))
	reach(t, i3, none, "10.0.0.70:5000", "i-1 10.0.0.30")
	reach(t, i1, netip.MustParseAddr("10.0.0.70"), "10.0.0.30:5000", "i-3 10.0.0.70")

	// An IPv6 prefix goes through the ENI's link-local address; here
	// from the other subnet, through the gateway.
	i2 := v.instanceNS("i-2")
	serve(t, i2, "tcp", ":8080", "i-2")
	v.eni("eni-02").IPv6Prefixes = []netip.Prefix{netip.MustParsePrefix("fd00:b:0:0:1::/80")}
	v.apply()
	addAddr(t, i2, "lo", netip.MustParsePrefix("fd00:b::1:0:0:5/128"))
	reach(t, i1, none, "[fd00:b::1:0:0:5]:8080", "i-2 fd00:a::10")
}

// TestSourceDestCheck sends UDP from an address the ENI does not have, to
// another instance and to one of the fabric's own addresses: it is dropped
// on both paths, until the ENI's check is turned off. UDP needs no answer,
// which could not come back to an address nobody has.
func TestSourceDestCheck(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1 := v.instanceNS("i-1")
	listen := func(nsName, address string) *net.UDPConn {
		var c *net.UDPConn
		in(t, nsName, func() error {
			a, err := net.ResolveUDPAddr("udp", address)
			if err == nil {
				c, err = net.ListenUDP("udp", a)
			}
			return err
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	peer := listen(v.instanceNS("i-2"), ":7000")
	imds := listen(FabricNamespace(v.spec.Name), "169.254.169.254:7001")
	spoofed, own := netip.MustParseAddr("10.0.0.77"), netip.MustParseAddr("10.0.0.10")
	addAddr(t, i1, "eth0", netip.PrefixFrom(spoofed, 32))

	send := func(src netip.Addr, dst string) {
		t.Helper()
		in(t, i1, func() error {
			d, err := net.ResolveUDPAddr("udp", dst)
			if err != nil {
				return err
			}
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, d)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(src.String()))
			return err
		})
	}
	// receive returns the sources of the datagrams that arrive on c until
	// want of them did or wait passed.
	receive := func(c *net.UDPConn, want int, wait time.Duration) string {
		var got []string
		buf := make([]byte, 100)
		c.SetReadDeadline(time.Now().Add(wait))
		for len(got) < want {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			src := from.Addr().Unmap()
			if string(buf[:n]) != src.String() {
				t.Errorf("datagram says it is from %s, arrived from %s", buf[:n], src)
			}
			got = append(got, src.String())
		}
		return strings.Join(got, ",")
	}

	for _, dst := range []string{"10.0.1.20:7000", "169.254.169.254:7001"} {
		send(spoofed, dst)
		send(own, dst)
	}
	if got := receive(peer, 2, expectTimeout); got != own.String() {
		t.Errorf("with the source check on, i-2 received from %q, want only %v", got, own)
	}
	if got := receive(imds, 2, expectTimeout); got != own.String() {
		t.Errorf("with the source check on, the fabric received from %q, want only %v", got, own)
	}

	v.eni("eni-01").SourceDestCheck = false
	v.apply()
	for _, dst := range []string{"10.0.1.20:7000", "169.254.169.254:7001"} {
		send(spoofed, dst)
	}
	if got := receive(peer, 1, patience); got != spoofed.String() {
		t.Errorf("with the source check off, i-2 received from %q, want %v", got, spoofed)
	}
	if got := receive(imds, 1, patience); got != spoofed.String() {
		t.Errorf("with the source check off, the fabric received from %q, want %v", got, spoofed)
	}
}

// TestSecurityGroups checks ingress by port, statefulness, ICMP types, the
// default group's members-only rule, and a group reference following
// membership changes.
func TestSecurityGroups(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i2, i3 := v.instanceNS("i-1"), v.instanceNS("i-2"), v.instanceNS("i-3")
	serve(t, i2, "tcp", ":8080", "i-2")
	serve(t, i2, "tcp", ":9090", "i-2")
	serve(t, i3, "tcp", ":5000", "i-3")
	serve(t, i1, "tcp", ":5000", "i-1")

	// web admits 8080 only; the answer coming back proves replies pass
	// although i-1's group admits nothing from web.
	reach(t, i1, none, "10.0.1.20:8080", "i-2 10.0.0.10")
	blocked(t, i1, none, "10.0.1.20:9090")

	// default members reach each other on any port; web does not reach
	// them.
	reach(t, i1, none, "10.0.0.30:5000", "i-3 10.0.0.10")
	reach(t, i3, none, "[fd00:a::10]:5000", "i-1 fd00:a::30")
	blocked(t, i2, none, "10.0.0.30:5000")
	blocked(t, i2, none, "[fd00:a::30]:5000")

	// ICMP: web admits echo requests from the VPC over IPv4; default
	// members admit anything from members.
	ping := testenv.Tool(t, "ping")
	run(t, "ip", "netns", "exec", i1, ping, "-c1", "-W5", "10.0.1.20")
	run(t, "ip", "netns", "exec", i1, ping, "-c1", "-W5", "10.0.0.30")
	if out, err := exec.Command("ip", "netns", "exec", i2, ping, "-c1", "-W1", "10.0.0.10").CombinedOutput(); err == nil {
		t.Errorf("echo from web to a default member answered; default admits members only:\n%s", out)
	}
	if out, err := exec.Command("ip", "netns", "exec", i1, ping, "-6", "-c1", "-W1", "fd00:b::20").CombinedOutput(); err == nil {
		t.Errorf("ICMPv6 echo to web answered; web admits IPv4 ICMP only:\n%s", out)
	}

	// Joining default lets i-2 in; leaving shuts it out again.
	v.eni("eni-02").Groups = []string{sgWeb, sgDefault}
	v.apply()
	reach(t, i2, none, "10.0.0.30:5000", "i-3 10.0.1.20")
	reach(t, i2, none, "[fd00:a::30]:5000", "i-3 fd00:b::20")
	v.eni("eni-02").Groups = []string{sgWeb}
	v.apply()
	blocked(t, i2, none, "10.0.0.30:5000")
}

// TestSecurityGroupEgress restricts what an ENI may send.
func TestSecurityGroupEgress(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i2 := v.instanceNS("i-1"), v.instanceNS("i-2")
	serve(t, i2, "tcp", ":8080", "i-2")
	v.spec.Groups = append(v.spec.Groups, SecurityGroup{
		ID:      "sg-locked",
		Ingress: v.spec.Groups[0].Ingress,
		Egress:  []Rule{{Protocol: "tcp", FromPort: 8000, ToPort: 8079, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}}},
	})
	v.eni("eni-01").Groups = []string{"sg-locked"}
	v.apply()
	blocked(t, i1, none, "10.0.1.20:8080")
	v.spec.Groups[2].Egress[0].ToPort = 8080
	v.apply()
	reach(t, i1, none, "10.0.1.20:8080", "i-2 10.0.0.10")
	blocked(t, i1, none, "[fd00:b::20]:8080") // the rule names IPv4 only

	// The fabric's own addresses are reachable whatever the groups say.
	v.spec.Groups[2].Egress = nil
	v.apply()
	l, err := Listen(v.spec.Name, "tcp", "[fd00:ec2::254]:80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go answer(l, "imds")
	reach(t, i1, none, "[fd00:ec2::254]:80", "imds fd00:a::10")
	blocked(t, i1, none, "10.0.1.20:8080")
}

// TestListen serves on the fabric's own addresses: IMDS and an in-VPC
// endpoint inside a subnet, reached from both subnets, the caller seen by
// its own address.
func TestListen(t *testing.T) {
	t.Parallel()
	v := newVPC(t)
	i1, i2 := v.instanceNS("i-1"), v.instanceNS("i-2")
	for _, a := range []string{"169.254.169.254:80", "[fd00:ec2::254]:80", "10.0.0.250:443"} {
		l, err := Listen(v.spec.Name, "tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go answer(l, a)
	}
	reach(t, i1, none, "169.254.169.254:80", "169.254.169.254:80 10.0.0.10")
	reach(t, i2, none, "169.254.169.254:80", "169.254.169.254:80 10.0.1.20")
	reach(t, i1, none, "[fd00:ec2::254]:80", "[fd00:ec2::254]:80 fd00:a::10")
	reach(t, i2, none, "[fd00:ec2::254]:80", "[fd00:ec2::254]:80 fd00:b::20")
	reach(t, i1, none, "10.0.0.250:443", "10.0.0.250:443 10.0.0.10") // same subnet: ARP
	reach(t, i2, none, "10.0.0.250:443", "10.0.0.250:443 10.0.1.20") // through the gateway
}
