package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func mustRange(t testing.TB, subnet, start, end, gw string) Range {
	t.Helper()
	r, err := NewRange(netip.MustParsePrefix(subnet), addr(start), addr(end), addr(gw))
	if err != nil {
		t.Fatalf("NewRange(%s, %q, %q, %q): %v", subnet, start, end, gw, err)
	}
	return r
}

func TestNewRange(t *testing.T) {
	tests := []struct {
		subnet, start, end, gw string
		want                   string // Range.String(), or the error
	}{
		{"10.0.0.0/24", "", "", "", "10.0.0.0/24[10.0.0.1-10.0.0.254 gw 10.0.0.1]"},
		{"10.0.0.0/29", "", "", "", "10.0.0.0/29[10.0.0.1-10.0.0.6 gw 10.0.0.1]"},
		{"169.254.172.0/22", "", "", "", "169.254.172.0/22[169.254.172.1-169.254.175.254 gw 169.254.172.1]"},
		{"10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.254", "10.0.0.0/24[10.0.0.10-10.0.0.20 gw 10.0.0.254]"},
		{"10.0.0.0/30", "", "", "", "10.0.0.0/30[10.0.0.1-10.0.0.2 gw 10.0.0.1]"},
		{"fd00::/64", "", "", "", "fd00::/64[fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1]"},
		{"fd00::/120", "fd00::10", "", "", "fd00::/120[fd00::10-fd00::ff gw fd00::1]"},
		{"fd00::/127", "", "", "", "fd00::/127[fd00::1-fd00::1 gw fd00::1]"},
		{"10.0.0.5/24", "", "", "", "subnet: 10.0.0.5/24 has host bits set (the network is 10.0.0.0/24)"},
		{"10.0.0.0/31", "", "", "", "subnet: 10.0.0.0/31 has no address to hand out"},
		{"10.0.0.1/32", "", "", "", "subnet: 10.0.0.1/32 has no address to hand out"},
		{"fd00::1/128", "", "", "", "subnet: fd00::1/128 has no address to hand out"},
		{"10.0.0.0/24", "10.0.1.1", "", "", "rangeStart: 10.0.1.1 is outside subnet 10.0.0.0/24"},
		{"10.0.0.0/24", "10.0.0.0", "", "", "rangeStart: 10.0.0.0 is the network address of 10.0.0.0/24"},
		{"10.0.0.0/24", "", "10.0.0.255", "", "rangeEnd: 10.0.0.255 is the broadcast address of 10.0.0.0/24"},
		{"10.0.0.0/24", "", "", "10.0.1.1", "gateway: 10.0.1.1 is outside subnet 10.0.0.0/24"},
		{"10.0.0.0/24", "", "", "fd00::1", "gateway: fd00::1 is outside subnet 10.0.0.0/24"},
		{"10.0.0.0/24", "10.0.0.50", "10.0.0.40", "", "rangeEnd: 10.0.0.40 is before rangeStart 10.0.0.50"},
	}
	for _, tt := range tests {
		r, err := NewRange(netip.MustParsePrefix(tt.subnet), addr(tt.start), addr(tt.end), addr(tt.gw))
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = r.String()
		}
		if got != tt.want {
			t.Errorf("NewRange(%s, %q, %q, %q)\n got %s\nwant %s", tt.subnet, tt.start, tt.end, tt.gw, got, tt.want)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for prefix, want := range map[string]string{
		"10.0.0.0/24":    "10.0.0.255",
		"10.0.0.0/22":    "10.0.3.255",
		"10.0.0.8/29":    "10.0.0.15",
		"10.1.2.3/32":    "10.1.2.3",
		"0.0.0.0/0":      "255.255.255.255",
		"fd00::/64":      "fd00::ffff:ffff:ffff:ffff",
		"fd00::/120":     "fd00::ff",
		"fd00:1::/127":   "fd00:1::1",
		"2001:db8::/125": "2001:db8::7",
	} {
		if got := lastAddr(netip.MustParsePrefix(prefix)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", prefix, got, want)
		}
	}
}

// heldSet is the in-memory stand-in for the store's address index.
func heldSet(addrs ...string) func(netip.Addr) bool {
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		m[netip.MustParseAddr(a)] = true
	}
	return func(a netip.Addr) bool { return m[a] }
}

func TestNextFree(t *testing.T) {
	// 10.0.0.0/29: .1 is the gateway, .2-.6 are handed out.
	small := RangeSet{mustRange(t, "10.0.0.0/29", "", "", "")}
	// Two ranges of one set, and a gateway in the middle of a range.
	split := RangeSet{
		mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.12", "10.0.0.11"),
		mustRange(t, "10.0.1.0/24", "10.0.1.100", "10.0.1.101", ""),
	}
	v6 := RangeSet{mustRange(t, "fd00::/120", "", "", "")}
	tests := []struct {
		name string
		set  RangeSet
		last string
		held []string
		want string // "" = exhausted
	}{
		{"fresh store skips the gateway", small, "", nil, "10.0.0.2"},
		{"continues after the last reserved", small, "10.0.0.4", nil, "10.0.0.5"},
		{"does not go back to a released address", small, "10.0.0.4", []string{"10.0.0.5"}, "10.0.0.6"},
		{"wraps around at the end", small, "10.0.0.6", nil, "10.0.0.2"},
		{"skips held addresses after wrapping", small, "10.0.0.6", []string{"10.0.0.2", "10.0.0.3"}, "10.0.0.4"},
		{"exhausted", small, "10.0.0.3", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}, ""},
		{"last outside the set starts at the first range", small, "192.168.0.1", nil, "10.0.0.2"},
		{"gateway inside a range is skipped", split, "10.0.0.10", nil, "10.0.0.12"},
		{"end of one range continues in the next", split, "10.0.0.12", nil, "10.0.1.100"},
		{"end of the last range wraps to the first", split, "10.0.1.101", nil, "10.0.0.10"},
		{"split set exhausted", split, "", []string{"10.0.0.10", "10.0.0.12", "10.0.1.100", "10.0.1.101"}, ""},
		{"IPv6", v6, "fd00::fe", []string{"fd00::ff", "fd00::2"}, "fd00::3"},
		{"only the gateway left", RangeSet{mustRange(t, "fd00::/127", "", "", "")}, "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.set.NextFree(addr(tt.last), heldSet(tt.held...))
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want exhausted", got)
				}
				return
			}
			if !ok || got.String() != tt.want {
				t.Fatalf("got %s (ok=%v), want %s", got, ok, tt.want)
			}
		})
	}
}

func TestValidateSets(t *testing.T) {
	v4a := mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "")
	v4b := mustRange(t, "10.0.0.0/24", "10.0.0.21", "10.0.0.30", "")
	v4overlap := mustRange(t, "10.0.0.0/24", "10.0.0.15", "10.0.0.25", "")
	v6 := mustRange(t, "fd00::/64", "", "", "")
	tests := []struct {
		name string
		sets []RangeSet
		want string
	}{
		{"disjoint ranges in one set", []RangeSet{{v4a, v4b}}, ""},
		{"dual stack", []RangeSet{{v4a}, {v6}}, ""},
		{"overlap within a set", []RangeSet{{v4a, v4overlap}}, "ranges[0][1].subnet: 10.0.0.0/24[10.0.0.15-10.0.0.25 gw 10.0.0.1] overlaps ranges[0][0]"},
		{"overlap across sets", []RangeSet{{v4a}, {v6}, {v4overlap}}, "ranges[2][0].subnet: 10.0.0.0/24[10.0.0.15-10.0.0.25 gw 10.0.0.1] overlaps ranges[0][0]"},
		{"families mixed in a set", []RangeSet{{v4a, v6}}, "ranges[0][1].subnet: fd00::/64 mixes address families with 10.0.0.0/24"},
		{"empty set", []RangeSet{{v4a}, {}}, "ranges[1][0].subnet: a range set needs at least one range"},
	}
	for _, tt := range tests {
		err := ValidateSets(tt.sets)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: got %q, want prefix %q", tt.name, got, tt.want)
		}
	}
}

func TestPlace(t *testing.T) {
	sets := []RangeSet{
		{mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.200", "10.0.0.1")},
		{mustRange(t, "fd00::/64", "", "", "")},
	}
	tests := []struct {
		name string
		want []string
		out  []string // one per set, "" = next-fit
		err  string
	}{
		{"nothing requested", nil, []string{"", ""}, ""},
		{"IPv4 only", []string{"10.0.0.50"}, []string{"10.0.0.50", ""}, ""},
		{"both families, any order", []string{"fd00::9", "10.0.0.50"}, []string{"10.0.0.50", "fd00::9"}, ""},
		{"repeated request", []string{"10.0.0.50", "10.0.0.50"}, []string{"10.0.0.50", ""}, ""},
		{"two in one set", []string{"10.0.0.50", "10.0.0.51"}, nil, "#1: 10.0.0.51 and 10.0.0.50 are both requested from range set"},
		{"outside every subnet", []string{"10.0.0.50", "192.168.1.1"}, nil, "#1: 192.168.1.1 is outside every subnet of the network (10.0.0.0/24, fd00::/64)"},
		{"in the subnet, outside the range", []string{"10.0.0.201"}, nil, "#0: 10.0.0.201 is outside range 10.0.0.10-10.0.0.200 of subnet 10.0.0.0/24"},
		{"network address", []string{"10.0.0.0"}, nil, "#0: 10.0.0.0 is the network address of 10.0.0.0/24"},
		{"broadcast address", []string{"10.0.0.255"}, nil, "#0: 10.0.0.255 is the broadcast address of 10.0.0.0/24"},
		{"gateway", []string{"fd00::1"}, nil, "#0: fd00::1 is the gateway of fd00::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []netip.Addr
			for _, s := range tt.want {
				want = append(want, addr(s))
			}
			got, err := Place(sets, want)
			if tt.err != "" {
				var pe *PlaceError
				if err == nil {
					t.Fatalf("got %v, want error %q", got, tt.err)
				}
				pe = err.(*PlaceError)
				msg := "#" + string(rune('0'+pe.Index)) + ": " + pe.Error()
				if !strings.HasPrefix(msg, tt.err) {
					t.Fatalf("got error %q, want %q", msg, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if g := got[i]; (tt.out[i] == "" && g.IsValid()) || (tt.out[i] != "" && g.String() != tt.out[i]) {
					t.Fatalf("set %d: got %v, want %q", i, g, tt.out[i])
				}
			}
		})
	}
}
