package vpc

import (
	"net/netip"
	"testing"
)

func TestReservedAddresses(t *testing.T) {
	cidr := netip.MustParsePrefix("10.0.1.0/24")
	for _, tc := range []struct {
		addr     string
		reserved bool
	}{
		{"10.0.1.0", true},  // network
		{"10.0.1.1", true},  // VPC router
		{"10.0.1.2", true},  // DNS
		{"10.0.1.3", true},  // reserved for future use
		{"10.0.1.4", false}, // first usable
		{"10.0.1.254", false},
		{"10.0.1.255", true}, // broadcast
	} {
		if got := reservedV4(cidr, netip.MustParseAddr(tc.addr)); got != tc.reserved {
			t.Errorf("reservedV4(%s) = %v, want %v", tc.addr, got, tc.reserved)
		}
	}
	v6 := netip.MustParsePrefix("fd00:1:2:3::/64")
	for _, tc := range []struct {
		addr     string
		reserved bool
	}{
		{"fd00:1:2:3::", true}, {"fd00:1:2:3::3", true}, {"fd00:1:2:3::4", false},
		{"fd00:1:2:3:ffff:ffff:ffff:fffe", false}, {"fd00:1:2:3:ffff:ffff:ffff:ffff", true},
	} {
		if got := reservedV6(v6, netip.MustParseAddr(tc.addr)); got != tc.reserved {
			t.Errorf("reservedV6(%s) = %v, want %v", tc.addr, got, tc.reserved)
		}
	}
}

func usage(addrs []string, prefixes []string) *subnetUsage {
	u := &subnetUsage{v4: map[netip.Addr]string{}, v4Prefixes: map[netip.Prefix]string{}, v6: map[netip.Addr]string{}, v6Prefixes: map[netip.Prefix]string{}}
	for _, a := range addrs {
		u.v4[netip.MustParseAddr(a)] = "eni-x"
	}
	for _, p := range prefixes {
		u.v4Prefixes[netip.MustParsePrefix(p)] = "eni-x"
	}
	return u
}

func TestNextFreeV4(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cidr     string
		used     []string
		prefixes []string
		want     string // "" for a full subnet
	}{
		{"empty subnet starts after the reserved four", "10.0.1.0/24", nil, nil, "10.0.1.4"},
		{"skips taken", "10.0.1.0/24", []string{"10.0.1.4", "10.0.1.5"}, nil, "10.0.1.6"},
		{"skips delegated prefixes", "10.0.1.0/24", []string{"10.0.1.4"}, []string{"10.0.1.0/28"}, "10.0.1.16"},
		{"a /28 has 11 usable addresses", "10.0.1.0/28", []string{"10.0.1.4", "10.0.1.5", "10.0.1.6", "10.0.1.7", "10.0.1.8", "10.0.1.9", "10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.1.13"}, nil, "10.0.1.14"},
		{"full /28", "10.0.1.0/28", []string{"10.0.1.4", "10.0.1.5", "10.0.1.6", "10.0.1.7", "10.0.1.8", "10.0.1.9", "10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.1.13", "10.0.1.14"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nextFreeV4(netip.MustParsePrefix(tc.cidr), usage(tc.used, tc.prefixes))
			if tc.want == "" {
				if ok {
					t.Fatalf("got %s from a full subnet", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("got %s (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

func TestFreeV4PrefixAlignment(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cidr     string
		used     []string
		prefixes []string
		want     string
	}{
		{"first /28 holds reserved addresses", "10.0.1.0/24", nil, nil, "10.0.1.16/28"},
		{"a used address spoils its /28", "10.0.1.0/24", []string{"10.0.1.20"}, nil, "10.0.1.32/28"},
		{"taken prefixes are skipped", "10.0.1.0/24", nil, []string{"10.0.1.16/28", "10.0.1.32/28"}, "10.0.1.48/28"},
		{"a /28 subnet has no delegable prefix", "10.0.1.0/28", nil, nil, ""},
		{"a /27 has neither of its two", "10.0.1.0/27", nil, nil, ""},
		{"last /28 holds the broadcast", "10.0.1.0/26", []string{"10.0.1.20", "10.0.1.40"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := freeV4Prefix(netip.MustParsePrefix(tc.cidr), usage(tc.used, tc.prefixes))
			if tc.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("got %s (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

func TestAvailableV4(t *testing.T) {
	cidr := netip.MustParsePrefix("10.0.1.0/24")
	if got := usage(nil, nil).availableV4(cidr); got != 251 {
		t.Errorf("empty /24: %d available, want 251", got)
	}
	if got := usage([]string{"10.0.1.4", "10.0.1.5"}, []string{"10.0.1.16/28"}).availableV4(cidr); got != 251-2-16 {
		t.Errorf("2 addresses and a /28: %d available, want %d", got, 251-18)
	}
}

func TestIPv6Allocation(t *testing.T) {
	cidr := netip.MustParsePrefix("fd00:1:2:3::/64")
	u := usage(nil, nil)
	a, ok := nextFreeV6(cidr, u)
	if !ok || a.String() != "fd00:1:2:3::4" {
		t.Fatalf("first IPv6 address %s, want fd00:1:2:3::4", a)
	}
	u.v6[a] = "eni-x"
	p, ok := freeV6Prefix(cidr, u)
	if !ok || p.String() != "fd00:1:2:3:1::/80" {
		t.Fatalf("first /80 %s, want fd00:1:2:3:1::/80 (the first /80 holds addresses)", p)
	}
	u.v6Prefixes[p] = "eni-x"
	if _, taken := u.ownerV6(netip.MustParseAddr("fd00:1:2:3:1::99")); !taken {
		t.Error("an address inside a delegated /80 is not seen as taken")
	}
}

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"eni-*", "eni-0123", true}, {"eni-*", "i-0123", false}, {"10.0.?.4", "10.0.1.4", true},
		{"10.0.?.4", "10.0.12.4", false}, {"*", "", true}, {"a\\*", "a*", true}, {"a\\*", "ab", false},
		{"exact", "exact", true}, {"exact", "exactly", false},
	} {
		if got := wildcardMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestNormalisePorts(t *testing.T) {
	for _, tc := range []struct {
		proto            string
		from, to         int32
		wantProto        string
		wantFrom, wantTo int32
		wantErr          bool
	}{
		{"-1", 0, 0, "-1", -1, -1, false},
		{"all", 5, 6, "-1", -1, -1, false},
		{"6", 80, 80, "tcp", 80, 80, false},
		{"TCP", 0, 65535, "tcp", 0, 65535, false},
		{"udp", 53, 52, "", 0, 0, true},
		{"icmp", -1, -1, "icmp", -1, -1, false},
		{"58", 128, 0, "icmpv6", 128, 0, false},
		{"bogus", 0, 0, "", 0, 0, true},
		{"47", 0, 0, "47", -1, -1, false},
	} {
		p, f, to, err := normalisePorts(tc.proto, tc.from, tc.to)
		if (err != nil) != tc.wantErr || (err == nil && (p != tc.wantProto || f != tc.wantFrom || to != tc.wantTo)) {
			t.Errorf("normalisePorts(%q, %d, %d) = %q %d %d %v", tc.proto, tc.from, tc.to, p, f, to, err)
		}
	}
}

func TestPermissionsRoundTrip(t *testing.T) {
	perms := []Permission{{
		Protocol: "tcp", FromPort: 80, ToPort: 443,
		CIDRs:  []PeerCIDR{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}, {CIDR: netip.MustParsePrefix("fd00::/8"), Description: "ula"}},
		Groups: []PeerGroup{{GroupID: "sg-1"}},
	}}
	rules, err := Rules(perms)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 3 {
		t.Fatalf("%d rules from one permission with three peers", len(rules))
	}
	back := Permissions(rules)
	if len(back) != 1 || len(back[0].CIDRs) != 2 || len(back[0].Groups) != 1 || back[0].CIDRs[1].Description != "ula" {
		t.Fatalf("regrouped permissions: %+v", back)
	}
}

func TestInstanceTypeLimits(t *testing.T) {
	for _, tc := range []struct {
		name         string
		enis, v4, v6 int32
	}{
		{"t3.medium", 3, 6, 6},
		{"m5.large", 3, 10, 10},
		{"m5.xlarge", 4, 15, 15},
		{"c5.4xlarge", 8, 30, 30},
		{"m5.24xlarge", 15, 50, 50},
	} {
		it, err := LookupInstanceType(tc.name)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if it.MaxNetworkInterfaces != tc.enis || it.IPv4PerInterface != tc.v4 || it.IPv6PerInterface != tc.v6 {
			t.Errorf("%s: %d ENIs, %d IPv4, %d IPv6; want %d, %d, %d", tc.name, it.MaxNetworkInterfaces, it.IPv4PerInterface, it.IPv6PerInterface, tc.enis, tc.v4, tc.v6)
		}
	}
	if _, err := LookupInstanceType("x9.huge"); !IsError(err, CodeInvalidParameterValue) {
		t.Errorf("unknown type: %v, want InvalidParameterValue", err)
	}
	if _, err := DescribeInstanceTypes([]string{"t3.medium", "x9.huge"}); !IsError(err, CodeInvalidInstanceType) {
		t.Errorf("DescribeInstanceTypes with an unknown type: %v, want InvalidInstanceType", err)
	}
}
