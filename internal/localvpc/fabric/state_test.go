package fabric

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Spec)
		want   string // substring of the error; "" for valid
	}{
		{"base", func(*Spec) {}, ""},
		{"bad VPC name", func(s *Spec) { s.Name = "a/b" }, "local VPC name"},
		{"instance ID with a dash", func(s *Spec) { s.Instances[0].ID = "i-1-x" }, "instance ID"},
		{"unknown instance", func(s *Spec) { s.Interfaces[0].InstanceID = "i-9" }, "unknown instance"},
		{"unknown subnet", func(s *Spec) { s.Interfaces[0].SubnetID = "subnet-z" }, "unknown subnet"},
		{"address outside the subnet", func(s *Spec) { s.Interfaces[0].IPv4 = addrs("10.0.1.5") }, "not in subnet"},
		{"address on two ENIs", func(s *Spec) { s.Interfaces[1].IPv4 = addrs("10.0.1.40") }, "assigned to both"},
		{"the gateway as an ENI address", func(s *Spec) { s.Interfaces[0].IPv4 = addrs("10.0.0.1") }, "assigned to both"},
		{"a local address as an ENI address", func(s *Spec) { s.Interfaces[0].IPv4 = addrs("10.0.0.250") }, "assigned to both"},
		{"two ENIs in one slot", func(s *Spec) { s.Interfaces[3].DeviceIndex = 0 }, "both at device index 0"},
		{"shared MAC", func(s *Spec) { s.Interfaces[1].MAC = mac(1) }, "share MAC"},
		{"multicast MAC", func(s *Spec) { s.Interfaces[1].MAC[0] = 0x03 }, "not a unicast"},
		{"IPv6 without an IPv6 subnet", func(s *Spec) { s.Subnets[1].IPv6 = netip.Prefix{} }, "no IPv6 block"},
		{"unknown group", func(s *Spec) { s.Interfaces[0].Groups = []string{"sg-nope"} }, "unknown security group"},
		{"rule references an unknown group", func(s *Spec) { s.Groups[0].Ingress[0].Groups = []string{"sg-nope"} }, "unknown security group"},
		{"bad protocol", func(s *Spec) { s.Groups[1].Ingress[0].Protocol = "sctpx" }, "protocol"},
		{"reversed ports", func(s *Spec) { s.Groups[1].Ingress[0].FromPort = 9000 }, "port range"},
		{"ICMP code without a type", func(s *Spec) { s.Groups[1].Ingress[2].FromPort, s.Groups[1].Ingress[2].ToPort = -1, 0 }, "ICMP code"},
		{"prefix without an address", func(s *Spec) {
			s.Interfaces[0].IPv4 = nil
			s.Interfaces[0].IPv4Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}
		}, "no IPv4 address to route"},
		{"prefix not masked", func(s *Spec) {
			s.Interfaces[0].IPv4Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.65/28")}
		}, "not a prefix of subnet"},
		{"device names collide", func(s *Spec) {
			s.Interfaces[0].ID = "eni-a00000000000000001"
			s.Interfaces[1].ID = "eni-b00000000000000001"
		}, "share the fabric device name"},
		{"MTU too small", func(s *Spec) { s.Interfaces[0].MTU = 576 }, "MTU"},
		{"external host", func(s *Spec) { s.External = netip.MustParseAddr("198.51.100.10") }, ""},
		{"external host inside a subnet", func(s *Spec) { s.External = netip.MustParseAddr("10.0.0.99") }, "inside subnet"},
		{"external host on an ENI's address", func(s *Spec) { s.External = netip.MustParseAddr("10.0.0.10") }, "assigned to both"},
		{"external host over IPv6", func(s *Spec) { s.External = netip.MustParseAddr("2001:db8::1") }, "not a unicast IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec("vt")
			tt.change(&s)
			err := s.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDesiredState(t *testing.T) {
	s := baseSpec("vt")
	s.Interfaces[0].IPv4Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}
	s.Interfaces[0].IPv6Prefixes = []netip.Prefix{netip.MustParsePrefix("fd00:a:0:0:1::/80")}
	st, err := desiredState(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"vt-i-1", "vt-i-2", "vt-i-3", "vt-i-4"}; !slices.Equal(st.Instances, want) {
		t.Errorf("instances %v, want %v", st.Instances, want)
	}
	if got := st.Devices["e01"]; got.Peer != "eth0" || got.Namespace != "vt-i-1" || got.Host == nil ||
		got.Host.IPv4 != netip.MustParsePrefix("10.0.0.10/24") || got.Host.Gateway4 != netip.MustParseAddr("10.0.0.1") ||
		got.Host.IPv6 != netip.MustParsePrefix("fd00:a::10/64") || got.Host.Gateway6 != netip.MustParseAddr("fd00:a::1") {
		t.Errorf("device of eni-01: %+v %+v", got, got.Host)
	}
	if got := st.Devices["e04"]; got.Peer != "eth1" || got.Host != nil || got.MTU != DefaultMTU {
		t.Errorf("device of the secondary eni-04: %+v, want eth1 without host configuration", got)
	}
	wantRoutes := map[string]route{
		"10.0.0.10/32":      {Dev: "e01"},
		"fd00:a::10/128":    {Dev: "e01"},
		"10.0.0.64/28":      {Dev: "e01", Via: netip.MustParseAddr("10.0.0.10")},
		"fd00:a:0:0:1::/80": {Dev: "e01", Via: netip.MustParseAddr("fe80::e0:ff:fe00:1")},
		"10.0.1.40/32":      {Dev: "e04"},
	}
	for dst, want := range wantRoutes {
		want.Dst = netip.MustParsePrefix(dst)
		if got := st.Routes[want.Dst]; got != want {
			t.Errorf("route to %s: %+v, want %+v", dst, got, want)
		}
	}
	if len(st.Routes) != 11 {
		t.Errorf("%d routes, want 11 (9 addresses, 2 prefixes)", len(st.Routes))
	}
	if !slices.Contains(st.Neighbours, neighbour{Dev: "e01", Addr: netip.MustParseAddr("fe80::e0:ff:fe00:1"), MAC: "02:e0:00:00:00:01"}) {
		t.Errorf("no neighbour entry for the next hop of eni-01's IPv6 prefix: %v", st.Neighbours)
	}
	if want := "10.0.0.1/32 10.0.0.250/32 10.0.1.1/32 169.254.169.254/32 fd00:a::1/128 fd00:b::1/128 fd00:ec2::254/128"; joinPrefixes(st.LoAddrs) != want {
		t.Errorf("fabric addresses %s, want %s", joinPrefixes(st.LoAddrs), want)
	}
}

// TestExternalHostState: the external host is a device of its own in a
// namespace of its own, routed and pinned like an ENI, with firewall
// chains that keep it off the fabric's own addresses.
func TestExternalHostState(t *testing.T) {
	s := baseSpec("vt")
	plain, err := desiredState(s)
	if err != nil {
		t.Fatal(err)
	}
	s.External = netip.MustParseAddr("198.51.100.10")
	st, err := desiredState(s)
	if err != nil {
		t.Fatal(err)
	}
	if plain.External != "" || st.External != "vt-ext" {
		t.Errorf("external namespace %q without, %q with an external host; want none and vt-ext", plain.External, st.External)
	}
	d := st.Devices[externalDevice]
	if d.Namespace != "vt-ext" || d.Peer != "eth0" || d.Host == nil || d.Host.IPv4 != netip.MustParsePrefix("198.51.100.10/32") || d.Host.Gateway4.IsValid() {
		t.Errorf("external device %+v %+v, want eth0 in vt-ext with 198.51.100.10/32 and the default route on the link", d, d.Host)
	}
	dst := netip.MustParsePrefix("198.51.100.10/32")
	if got := st.Routes[dst]; got != (route{Dst: dst, Dev: externalDevice}) {
		t.Errorf("route to the external host: %+v", got)
	}
	if st.Firewall.Out[externalDevice] != externalOut || st.Firewall.In[externalDevice] != externalIn {
		t.Errorf("firewall maps of %s: out %q in %q", externalDevice, st.Firewall.Out[externalDevice], st.Firewall.In[externalDevice])
	}
	if rules := st.Firewall.Chains[externalOut]; !slices.Contains(rules, "ip daddr @"+localSet(ipv4)+" drop") {
		t.Errorf("traffic from the external host may reach the fabric's own addresses: %v", rules)
	}
	if len(st.Devices) != len(plain.Devices)+1 || len(st.Routes) != len(plain.Routes)+1 {
		t.Errorf("the external host changed more than its own device and route")
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

func TestProxies(t *testing.T) {
	s := baseSpec("vt")
	s.LocalAddrs = append(s.LocalAddrs, netip.MustParseAddr("fd00:a::250"))
	var got []string
	for _, p := range proxies(s) {
		got = append(got, p.Dev+" "+p.Addr.String())
	}
	// Each IPv6 ENI gets the on-link addresses of its subnet but its own;
	// eni-04 has no IPv6 and gets none.
	want := []string{
		"e01 fd00:a::1", "e01 fd00:a::30", "e01 fd00:a::60", "e01 fd00:a::250",
		"e02 fd00:b::1",
		"e03 fd00:a::1", "e03 fd00:a::10", "e03 fd00:a::60", "e03 fd00:a::250",
		"e05 fd00:a::1", "e05 fd00:a::10", "e05 fd00:a::30", "e05 fd00:a::250",
	}
	if !slices.Equal(got, want) {
		t.Errorf("proxies:\n got %v\nwant %v", got, want)
	}
}

func TestPlanLinks(t *testing.T) {
	want := map[string]device{
		"e01": {Name: "e01", Alias: "a1", MTU: 9001},
		"e02": {Name: "e02", Alias: "a2", MTU: 1500},
	}
	tests := []struct {
		name           string
		have           []linkState
		remove, create []string
		setMTU         map[string]int
	}{
		{"nothing yet", []linkState{{Name: "lo", Up: true}}, nil, []string{"e01", "e02"}, map[string]int{}},
		{"all there", []linkState{{Name: "e01", Alias: "a1", Up: true, MTU: 9001}, {Name: "e02", Alias: "a2", Up: true, MTU: 1500}}, nil, nil, map[string]int{}},
		{"built for another attachment", []linkState{{Name: "e01", Alias: "old", Up: true, MTU: 9001}, {Name: "e02", Alias: "a2", Up: true, MTU: 1500}}, []string{"e01"}, []string{"e01"}, map[string]int{}},
		{"interrupted build", []linkState{{Name: "e01", Alias: "a1", MTU: 9001}, {Name: "e02", Alias: "a2", Up: true, MTU: 1500}}, []string{"e01"}, []string{"e01"}, map[string]int{}},
		{"detached and stray", []linkState{{Name: "e01", Alias: "a1", Up: true, MTU: 9001}, {Name: "e02", Alias: "a2", Up: true, MTU: 1500}, {Name: "e03", Alias: "a3", Up: true}, {Name: "junk"}}, []string{"e03", "junk"}, nil, map[string]int{}},
		{"MTU changed", []linkState{{Name: "e01", Alias: "a1", Up: true, MTU: 1500}, {Name: "e02", Alias: "a2", Up: true, MTU: 1500}}, nil, nil, map[string]int{"e01": 9001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planLinks(want, tt.have)
			var create []string
			for _, d := range p.Create {
				create = append(create, d.Name)
			}
			if !slices.Equal(p.Remove, tt.remove) || !slices.Equal(create, tt.create) || len(p.SetMTU) != len(tt.setMTU) {
				t.Fatalf("planLinks: remove %v create %v mtu %v; want %v %v %v", p.Remove, create, p.SetMTU, tt.remove, tt.create, tt.setMTU)
			}
			for k, v := range tt.setMTU {
				if p.SetMTU[k] != v {
					t.Fatalf("MTU of %s: %d, want %d", k, p.SetMTU[k], v)
				}
			}
		})
	}
}

func TestRuleLines(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		rule Rule
		want []string
	}{
		{"all traffic from a group", Rule{Protocol: "-1", FromPort: -1, ToPort: -1, Groups: []string{"sg-a"}},
			[]string{"ip saddr @sg-a-v4 accept", "ip6 saddr @sg-a-v6 accept"}},
		{"one TCP port from anywhere IPv4", Rule{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDRs: []netip.Prefix{p("0.0.0.0/0")}},
			[]string{"meta nfproto ipv4 tcp dport 22 accept"}},
		{"UDP range, protocol by number, overlapping CIDRs", Rule{Protocol: "17", FromPort: 1000, ToPort: 2000, CIDRs: []netip.Prefix{p("10.0.0.0/16"), p("10.0.3.0/24"), p("fd00::/8")}},
			[]string{"ip saddr { 10.0.0.0/16 } udp dport 1000-2000 accept", "ip6 saddr { fd00::/8 } udp dport 1000-2000 accept"}},
		{"all TCP ports", Rule{Protocol: "tcp", FromPort: 0, ToPort: 65535, CIDRs: []netip.Prefix{p("10.0.0.5/32")}},
			[]string{"ip saddr { 10.0.0.5 } meta l4proto tcp accept"}},
		{"ICMP echo, any code", Rule{Protocol: "icmp", FromPort: 8, ToPort: -1, CIDRs: []netip.Prefix{p("0.0.0.0/0"), p("::/0")}},
			[]string{"meta nfproto ipv4 icmp type 8 accept"}},
		{"ICMPv6 type and code", Rule{Protocol: "icmpv6", FromPort: 128, ToPort: 0, CIDRs: []netip.Prefix{p("::/0")}},
			[]string{"meta nfproto ipv6 icmpv6 type 128 icmpv6 code 0 accept"}},
		{"all ICMP", Rule{Protocol: "icmp", FromPort: -1, ToPort: -1, Groups: []string{"sg-a"}},
			[]string{"ip saddr @sg-a-v4 meta l4proto icmp accept"}},
		{"another protocol", Rule{Protocol: "47", FromPort: -1, ToPort: -1, CIDRs: []netip.Prefix{p("10.0.0.0/8")}},
			[]string{"ip saddr { 10.0.0.0/8 } meta l4proto 47 accept"}},
		{"no peer", Rule{Protocol: "-1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ruleLines([]Rule{tt.rule}, "saddr"); !slices.Equal(got, tt.want) {
				t.Fatalf("ruleLines:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestNamespaceNames(t *testing.T) {
	tests := []struct {
		vpc, ns string
		want    bool
	}{
		{"vpcnet", "vpcnet-fabric", true},
		{"vpcnet", "vpcnet-i-0abc", true},
		{"vpcnet", "vpcnet-2-fabric", false}, // another VPC's
		{"vpcnet", "vpcnet-2-i-0abc", false},
		{"vpcnet", "vpcnet-i-0abc-x", false},
		{"vpcnet-2", "vpcnet-2-i-0abc", true},
		{"vpcnet", "vpcnetx-i-1", false},
	}
	for _, tt := range tests {
		if got := isVPCNamespace(tt.vpc, tt.ns); got != tt.want {
			t.Errorf("isVPCNamespace(%q, %q) = %v, want %v", tt.vpc, tt.ns, got, tt.want)
		}
	}
	if got := deviceName("eni-0123456789abcdef0"); got != "e3456789abcdef0" || len(got) > 15 {
		t.Errorf("deviceName = %q", got)
	}
	if id, ok := interfaceOfAlias(deviceAlias(Interface{ID: "eni-7", InstanceID: "i-1", MAC: mac(1)})); !ok || id != "eni-7" {
		t.Errorf("interfaceOfAlias = %q, %v", id, ok)
	}
	if _, ok := interfaceOfAlias(removedAlias); ok {
		t.Error("a removed device's alias names an ENI")
	}
}

// TestFirewallStable checks that the table depends on the spec's content
// only, not on the order of its lists, and changes with membership.
func TestFirewallStable(t *testing.T) {
	a := baseSpec("vt")
	b := baseSpec("vt")
	slices.Reverse(b.Interfaces)
	slices.Reverse(b.Groups)
	ta, tb := buildTable(a), buildTable(b)
	if ta.text() != tb.text() || ta.fingerprint() != tb.fingerprint() {
		t.Fatalf("the table depends on list order:\n%s", testenv.LineDiff(ta.text(), tb.text()))
	}
	b.Interfaces[0].Groups = []string{sgWeb}
	if buildTable(b).fingerprint() == ta.fingerprint() {
		t.Fatal("fingerprint unchanged after a membership change")
	}
}

// everyRule is baseSpec with a group using every kind of rule, and ENIs with
// prefixes and without the source check.
func everyRule() Spec {
	s := baseSpec("vt")
	p := netip.MustParsePrefix
	s.Groups = append(s.Groups, SecurityGroup{
		ID: "sg-every",
		Ingress: []Rule{
			{Protocol: "tcp", FromPort: 1, ToPort: 1024, CIDRs: []netip.Prefix{p("10.0.0.0/16"), p("10.0.5.0/24"), p("fd00::/8")}},
			{Protocol: "udp", FromPort: -1, ToPort: -1, Groups: []string{"sg-every", sgWeb}},
			{Protocol: "icmp", FromPort: 3, ToPort: 4, CIDRs: []netip.Prefix{p("0.0.0.0/0")}},
			{Protocol: "icmpv6", FromPort: -1, ToPort: -1, CIDRs: []netip.Prefix{p("::/0")}},
			{Protocol: "132", FromPort: -1, ToPort: -1, CIDRs: []netip.Prefix{p("10.0.0.1/32")}},
		},
		Egress: []Rule{{Protocol: "6", FromPort: 443, ToPort: 443, CIDRs: []netip.Prefix{p("0.0.0.0/0"), p("::/0")}}},
	})
	s.Interfaces[1].Groups = []string{"sg-every"}
	s.Interfaces[1].IPv4Prefixes = []netip.Prefix{p("10.0.1.64/28"), p("10.0.1.80/28")}
	s.Interfaces[1].IPv6Prefixes = []netip.Prefix{p("fd00:b:0:0:1::/80")}
	s.Interfaces[2].SourceDestCheck = false
	return s
}

// nftIn runs an nft script in a scratch namespace.
func nftIn(t *testing.T, scratch, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", scratch, "nft"}, append(args, "-f", "-")...)...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft rejects the script: %v\n%s\n%s", err, out, script)
	}
}

// TestFirewallUpdates loads a table, then walks through a series of specs
// applying only the difference each time, and checks after each step that
// the kernel holds exactly what loading the whole table would give.
func TestFirewallUpdates(t *testing.T) {
	testenv.Tool(t, "nft")
	stepped, whole := testenv.NewNS(t, "fabric"), testenv.NewNS(t, "fabric")

	s := everyRule()
	steps := []struct {
		name   string
		change func(*Spec)
	}{
		{"nothing", func(*Spec) {}},
		{"attach an ENI", func(s *Spec) {
			s.Interfaces = append(s.Interfaces, Interface{ID: "eni-09", InstanceID: "i-2", DeviceIndex: 1, MAC: mac(9), SubnetID: subnetB.ID,
				IPv4: addrs("10.0.1.90"), SourceDestCheck: true, Groups: []string{sgWeb, "sg-every"}})
		}},
		{"a group member leaves", func(s *Spec) { s.Interfaces[0].Groups = []string{sgWeb} }},
		{"a rule changes", func(s *Spec) { s.Groups[1].Ingress[0].ToPort = 8081 }},
		{"no longer referenced", func(s *Spec) { s.Groups[2].Ingress = s.Groups[2].Ingress[:1] }},
		{"source check off, then a secondary address", func(s *Spec) {
			s.Interfaces[1].SourceDestCheck = false
			s.Interfaces[3].IPv4 = append(s.Interfaces[3].IPv4, netip.MustParseAddr("10.0.1.41"))
		}},
		{"a prefix swallows an address", func(s *Spec) {
			s.Interfaces[3].IPv4Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.1.32/28")}
		}},
		{"and lets it go", func(s *Spec) { s.Interfaces[3].IPv4Prefixes = nil }},
		{"detach two ENIs", func(s *Spec) { s.Interfaces = s.Interfaces[2:] }},
		{"no local addresses", func(s *Spec) { s.LocalAddrs = nil }},
		{"nothing attached", func(s *Spec) { s.Interfaces = nil }},
	}
	prev := buildTable(s)
	nftIn(t, testenv.NSName(stepped), prev.script())
	stale := 0
	for _, step := range steps {
		step.change(&s)
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		next := buildTable(s)
		script, flushed := next.update(prev, stale)
		nftIn(t, testenv.NSName(stepped), script)
		stale++
		if flushed {
			stale = 0
		}
		nftIn(t, testenv.NSName(whole), next.script())
		got := canonicalTable(t, testenv.NSName(stepped))
		want := canonicalTable(t, testenv.NSName(whole))
		if got != want {
			t.Fatalf("%s: the updated table differs from the whole one:\n%s", step.name, testenv.LineDiff(want, got))
		}
		if fp := loadedFingerprint(stepped); fp != next.fingerprint() {
			t.Fatalf("%s: the table carries fingerprint %q, want %s", step.name, fp, next.fingerprint())
		}
		prev = next
	}
}

// canonicalTable lists the fabric table of a namespace in a form that does
// not depend on the order objects were created in: objects sorted, set and
// map elements sorted, handles dropped, rules kept in their chain's order,
// and the fingerprint chain left out (stale fingerprints pile up there).
func canonicalTable(t *testing.T, nsName string) string {
	t.Helper()
	var listing struct {
		Nftables []map[string]any `json:"nftables"`
	}
	out := run(t, "ip", "netns", "exec", nsName, "nft", "-j", "list", "table", "inet", tableName)
	if err := json.Unmarshal([]byte(out), &listing); err != nil {
		t.Fatalf("decode nft -j output: %v\n%s", err, out)
	}
	var objects []string
	rules := map[string][]string{}
	for _, o := range listing.Nftables {
		for kind, v := range o {
			body, ok := v.(map[string]any)
			if !ok || kind == "metainfo" {
				continue
			}
			delete(body, "handle")
			if elems, ok := body["elem"].([]any); ok {
				slices.SortFunc(elems, func(a, b any) int { return strings.Compare(jsonText(t, a), jsonText(t, b)) })
			}
			if kind == "rule" {
				chain := body["chain"].(string)
				if chain == fingerprintChain {
					continue
				}
				rules[chain] = append(rules[chain], jsonText(t, body))
				continue
			}
			objects = append(objects, kind+" "+jsonText(t, body))
		}
	}
	slices.Sort(objects)
	for _, chain := range slices.Sorted(maps.Keys(rules)) {
		objects = append(objects, "rules of "+chain+":\n  "+strings.Join(rules[chain], "\n  "))
	}
	return strings.Join(objects, "\n")
}

func jsonText(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStaleFingerprintsBounded attaches ENI after ENI, each an update that
// only adds: the fingerprint chain grows, but never past its bound, and
// its first rule is always the current fingerprint.
func TestStaleFingerprintsBounded(t *testing.T) {
	testenv.Tool(t, "nft")
	scratch := testenv.NewNS(t, "fabric")
	s := baseSpec("vt")
	prev := buildTable(s)
	nftIn(t, testenv.NSName(scratch), prev.script())
	stale, flushes := 0, 0
	for i := range maxStaleFingerprints + 3 {
		s.Interfaces = append(s.Interfaces, Interface{ID: fmt.Sprintf("eni-1%02d", i), InstanceID: "i-2", DeviceIndex: i + 1,
			MAC: mac(byte(100 + i)), SubnetID: subnetB.ID, IPv4: addrs(fmt.Sprintf("10.0.1.%d", 100+i)), Groups: []string{sgDefault}})
		next := buildTable(s)
		script, flushed := next.update(prev, stale)
		if strings.Contains(script, "delete") {
			t.Fatalf("attaching an ENI deletes something:\n%s", script)
		}
		nftIn(t, testenv.NSName(scratch), script)
		stale++
		if flushed {
			stale, flushes = 0, flushes+1
		}
		if fp := loadedFingerprint(scratch); fp != next.fingerprint() {
			t.Fatalf("attach %d: fingerprint %q, want %s", i, fp, next.fingerprint())
		}
		prev = next
	}
	out := run(t, "ip", "netns", "exec", testenv.NSName(scratch), "nft", "list", "chain", "inet", tableName, fingerprintChain)
	if n := strings.Count(out, "comment"); flushes != 1 || n > maxStaleFingerprints+1 {
		t.Fatalf("%d flushes, %d fingerprints in the chain; want 1 flush and at most %d", flushes, n, maxStaleFingerprints+1)
	}
}
