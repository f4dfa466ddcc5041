package fabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// Every local VPC these tests build is named vpcPrefix + 6 hex digits, so a
// crashed run's leftovers are found by name and nobody else's are touched.
const vpcPrefix = "vfab"

var leftoverRE = regexp.MustCompile(`^(` + vpcPrefix + `[0-9a-f]{6})-`)

func TestMain(m *testing.M) {
	testenv.CleanLeftovers("fabric")
	if os.Geteuid() == 0 {
		names, _ := netops.ListNamedNS(vpcPrefix)
		done := map[string]bool{}
		for _, n := range names {
			if m := leftoverRE.FindStringSubmatch(n); m != nil && !done[m[1]] {
				done[m[1]] = true
				_ = Destroy(m[1])
			}
		}
	}
	os.Exit(m.Run())
}

// Timeouts: a connection inside one machine's VPC is made in well under a
// millisecond, so expectTimeout is only how long a test waits before it
// calls a packet dropped, and patience a bound that no working path reaches.
const (
	expectTimeout = 800 * time.Millisecond
	patience      = 10 * time.Second
)

// Addresses and IDs of the test VPC.
var (
	subnetA = Subnet{ID: "subnet-a", IPv4: netip.MustParsePrefix("10.0.0.0/24"), IPv6: netip.MustParsePrefix("fd00:a::/64")}
	subnetB = Subnet{ID: "subnet-b", IPv4: netip.MustParsePrefix("10.0.1.0/24"), IPv6: netip.MustParsePrefix("fd00:b::/64")}

	imds4    = netip.MustParseAddr("169.254.169.254")
	imds6    = netip.MustParseAddr("fd00:ec2::254")
	endpoint = netip.MustParseAddr("10.0.0.250")
)

const (
	sgDefault = "sg-default"
	sgWeb     = "sg-web"
)

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0xe0, 0, 0, 0, last} }

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// baseSpec is a VPC with two subnets and four instances:
//
//	i-1  eth0 eni-01 subnet-a 10.0.0.10 fd00:a::10  default
//	     eth1 eni-04 subnet-b 10.0.1.40             default   (secondary ENI)
//	i-2  eth0 eni-02 subnet-b 10.0.1.20 fd00:b::20  web
//	i-3  eth0 eni-03 subnet-a 10.0.0.30 fd00:a::30  default
//	i-4  eth0 eni-05 subnet-a 10.0.0.60 fd00:a::60  default
//
// The default group admits its members and sends anywhere; web admits TCP
// 8080 and UDP 7000 from anywhere and ICMP echo from the VPC.
func baseSpec(name string) Spec {
	all4, all6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	eni := func(id, inst string, idx int, sn Subnet, last byte, v4 string, v6 []string, groups ...string) Interface {
		return Interface{
			ID: id, InstanceID: inst, DeviceIndex: idx, MAC: mac(last), SubnetID: sn.ID,
			IPv4: addrs(v4), IPv6: addrs(v6...), SourceDestCheck: true, Groups: groups,
		}
	}
	return Spec{
		Name:      name,
		Subnets:   []Subnet{subnetA, subnetB},
		Instances: []Instance{{ID: "i-1"}, {ID: "i-2"}, {ID: "i-3"}, {ID: "i-4"}},
		Interfaces: []Interface{
			eni("eni-01", "i-1", 0, subnetA, 1, "10.0.0.10", []string{"fd00:a::10"}, sgDefault),
			eni("eni-02", "i-2", 0, subnetB, 2, "10.0.1.20", []string{"fd00:b::20"}, sgWeb),
			eni("eni-03", "i-3", 0, subnetA, 3, "10.0.0.30", []string{"fd00:a::30"}, sgDefault),
			eni("eni-04", "i-1", 1, subnetB, 4, "10.0.1.40", nil, sgDefault),
			eni("eni-05", "i-4", 0, subnetA, 5, "10.0.0.60", []string{"fd00:a::60"}, sgDefault),
		},
		Groups: []SecurityGroup{
			{
				ID:      sgDefault,
				Ingress: []Rule{{Protocol: "-1", FromPort: -1, ToPort: -1, Groups: []string{sgDefault}}},
				Egress:  []Rule{{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRs: []netip.Prefix{all4, all6}}},
			},
			{
				ID: sgWeb,
				Ingress: []Rule{
					{Protocol: "tcp", FromPort: 8080, ToPort: 8080, CIDRs: []netip.Prefix{all4, all6}},
					{Protocol: "udp", FromPort: 7000, ToPort: 7000, CIDRs: []netip.Prefix{all4}},
					{Protocol: "icmp", FromPort: 8, ToPort: -1, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}},
				},
				Egress: []Rule{{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRs: []netip.Prefix{all4, all6}}},
			},
		},
		LocalAddrs: []netip.Addr{imds4, imds6, endpoint},
	}
}

// vpc is a local VPC under test.
type vpc struct {
	t    *testing.T
	spec Spec
}

// newVPC applies baseSpec under a fresh name and destroys it when the test
// ends, pass or fail.
func newVPC(t *testing.T) *vpc {
	t.Helper()
	testenv.Privileged(t)
	testenv.Tool(t, "nft")
	v := &vpc{t: t, spec: baseSpec(vpcPrefix + testenv.RandomHex(3))}
	t.Cleanup(func() {
		if err := Destroy(v.spec.Name); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	v.apply()
	return v
}

func (v *vpc) apply() {
	v.t.Helper()
	if err := Apply(v.t.Context(), v.spec); err != nil {
		v.t.Fatalf("Apply: %v", err)
	}
}

// eni returns the spec's ENI id for editing.
func (v *vpc) eni(id string) *Interface {
	v.t.Helper()
	for i := range v.spec.Interfaces {
		if v.spec.Interfaces[i].ID == id {
			return &v.spec.Interfaces[i]
		}
	}
	v.t.Fatalf("no ENI %s in the spec", id)
	return nil
}

func (v *vpc) instanceNS(id string) string { return InstanceNamespace(v.spec.Name, id) }

// in runs fn in the named namespace.
func in(t testing.TB, nsName string, fn func() error) {
	t.Helper()
	if err := ns.WithNetNSPath(netops.NamedNSPath(nsName), func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatalf("in namespace %s: %v", nsName, err)
	}
}

// serve accepts TCP connections on address inside namespace nsName and
// answers each with "<label> <peer address>", so a client learns who
// answered and whom the server saw.
func serve(t testing.TB, nsName, network, address, label string) {
	t.Helper()
	var l net.Listener
	in(t, nsName, func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	t.Cleanup(func() { l.Close() })
	go answer(l, label)
}

func answer(l net.Listener, label string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		fmt.Fprintf(c, "%s %s\n", label, peer)
		c.Close()
	}
}

// dial connects from namespace nsName (from the source address src, if
// valid) to address and returns the server's answer.
func dial(t testing.TB, nsName string, src netip.Addr, address string, timeout time.Duration) (string, error) {
	t.Helper()
	n, err := ns.GetNS(netops.NamedNSPath(nsName))
	if err != nil {
		t.Fatalf("in namespace %s: %v", nsName, err)
	}
	defer n.Close()
	line, err := testenv.DialLine(context.Background(), n, src, address, timeout)
	if errors.Is(err, testenv.ErrNamespace) {
		t.Fatalf("in namespace %s: %v", nsName, err)
	}
	return line, err
}

// reach asserts that a connection from nsName to address is answered with
// want ("<label> <peer>").
func reach(t testing.TB, nsName string, src netip.Addr, address, want string) {
	t.Helper()
	got, err := dial(t, nsName, src, address, patience)
	if err != nil {
		t.Logf("%s's devices and routes:\n%s", nsName, kernelView(nsName))
		t.Logf("the fabric's:\n%s", kernelView(strings.TrimSuffix(nsName, nsName[strings.LastIndex(nsName, "-i-"):])+"-fabric"))
		t.Fatalf("from %s (source %s) to %s: %v; want answer %q", nsName, source(src), address, err, want)
	}
	if got != want {
		t.Fatalf("from %s to %s: answer %q, want %q", nsName, address, got, want)
	}
}

// autoconfSettled reports whether the kernel has given every device with
// carrier in the current namespace its IPv6 link-local address: it does so
// from a work queue some time after carrier comes up, so a snapshot taken
// before would see the kernel's own change as the fabric's.
func autoconfSettled() error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		a := l.Attrs()
		if a.RawFlags&unix.IFF_LOWER_UP == 0 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(as, func(ad netlink.Addr) bool {
			return ad.IP.IsLinkLocalUnicast() && ad.Flags&unix.IFA_F_TENTATIVE == 0
		}) {
			return fmt.Errorf("%s has no link-local IPv6 address yet", a.Name)
		}
	}
	return nil
}

// kernelView is what ip(8) shows of a namespace's addresses and routes, to
// explain a failed connection.
func kernelView(nsName string) string {
	var b strings.Builder
	for _, args := range [][]string{{"addr"}, {"rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}, {"-6", "neigh"}} {
		out, err := exec.Command("ip", append([]string{"-n", nsName}, args...)...).CombinedOutput()
		fmt.Fprintf(&b, "$ ip %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// blocked asserts that a connection from nsName to address gets no answer.
func blocked(t testing.TB, nsName string, src netip.Addr, address string) {
	t.Helper()
	if got, err := dial(t, nsName, src, address, expectTimeout); err == nil {
		t.Fatalf("from %s (source %s) to %s: answered %q, want no connection", nsName, source(src), address, got)
	}
}

func source(a netip.Addr) string {
	if !a.IsValid() {
		return "chosen by the kernel"
	}
	return a.String()
}

// addAddr configures an address on a device inside a namespace, as an agent
// or plugin would.
func addAddr(t testing.TB, nsName, dev string, p netip.Prefix) {
	t.Helper()
	in(t, nsName, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: netops.IPNet(p), Flags: unix.IFA_F_NODAD})
	})
	// The kernel takes a new IPv6 address as its own (the local route)
	// from a work queue, not in the netlink call: a packet arriving before
	// that is not delivered.
	testenv.Eventually(t, patience, func() error {
		var err error
		in(t, nsName, func() error {
			var rs []netlink.Route
			if rs, err = netlink.RouteGet(p.Addr().AsSlice()); err == nil && (len(rs) == 0 || rs[0].Type != unix.RTN_LOCAL) {
				err = fmt.Errorf("%v is not local yet: %v", p.Addr(), rs)
			}
			return nil
		})
		return err
	})
}

func delAddr(t testing.TB, nsName, dev string, p netip.Prefix) {
	t.Helper()
	in(t, nsName, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.AddrDel(l, &netlink.Addr{IPNet: netops.IPNet(p)})
	})
}

// run runs a command and returns its combined output, failing the test if
// it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// snapshot describes, one fact a line, what the kernel holds for a local
// VPC: per namespace its devices, addresses, routes, neighbour and proxy
// entries, and the fabric's ruleset. With exact, it includes what is new
// each time an object is rebuilt (device indexes, the fabric ends' random
// MACs, rule handles), so that equal exact snapshots prove nothing was
// touched.
func snapshot(t testing.TB, name string, exact bool) string {
	t.Helper()
	all, err := netops.ListNamedNS(name + "-")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	var sysctls []string
	for _, kv := range fabricSysctls {
		sysctls = append(sysctls, kv[0])
	}
	var b strings.Builder
	for _, n := range all {
		if !isVPCNamespace(name, n) {
			continue
		}
		isFabric := n == FabricNamespace(name)
		h, err := ns.GetNS(netops.NamedNSPath(n))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, patience, func() error {
			return h.Do(func(ns.NetNS) error { return autoconfSettled() })
		})
		opts := testenv.NetStateOptions{
			// Link-local addresses and routes derive from the random MACs
			// of the fabric ends; multicast routes are added when carrier
			// comes up, asynchronously.
			Skip: func(_ string, ip net.IP) bool {
				return ip.IsLinkLocalUnicast() && !exact || ip.IsMulticast()
			},
			NoMAC:      isFabric && !exact,
			Flags:      true,
			Index:      exact,
			Protocol:   true,
			Neighbours: true,
		}
		if isFabric {
			opts.Sysctls = sysctls
		}
		state := testenv.NetStateWith(t, h, opts)
		h.Close()
		fmt.Fprintf(&b, "namespace %s\n  %s\n", n, strings.ReplaceAll(state, "\n", "\n  "))
		if isFabric {
			args := []string{"netns", "exec", n, "nft", "list", "ruleset"}
			if exact {
				args = []string{"netns", "exec", n, "nft", "-a", "list", "ruleset"}
			}
			b.WriteString(run(t, "ip", args...))
		}
	}
	return b.String()
}
