package pool

import (
	"net/netip"
	"testing"
	"time"
)

func TestPick(t *testing.T) {
	now := t0
	ip := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	soon, past := now.Add(10*time.Second), now.Add(-time.Second)
	tests := []struct {
		name    string
		s       State
		eni, ip string // "" eni: none
	}{
		{name: "nothing attached", s: State{}},
		{name: "assigned and cooling are skipped, an ended cooldown is free", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Addresses: []Address{
				{IP: ip("10.0.0.1"), Assigned: true}, {IP: ip("10.0.0.2"), CooldownUntil: soon}, {IP: ip("10.0.0.3"), CooldownUntil: past}}},
		}}, eni: "eni-p", ip: "10.0.0.3"},
		{name: "all assigned or cooling: none", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Addresses: []Address{{IP: ip("10.0.0.1"), Assigned: true}, {IP: ip("10.0.0.2"), CooldownUntil: soon}}},
		}}},
		{name: "primary ENI first, then the lowest device index", s: State{ENIs: []ENI{
			{ID: "eni-3", DeviceIndex: 3, Addresses: []Address{{IP: ip("10.0.3.1")}}},
			{ID: "eni-1", DeviceIndex: 1, Addresses: []Address{{IP: ip("10.0.1.9")}, {IP: ip("10.0.1.2")}}},
			{ID: "eni-p", Primary: true, Addresses: []Address{{IP: ip("10.0.0.1"), Assigned: true}}},
		}}, eni: "eni-1", ip: "10.0.1.2"},
		{name: "custom networking: never the primary ENI", s: State{CustomNetworking: true, ENIs: []ENI{
			{ID: "eni-p", Primary: true, Addresses: []Address{{IP: ip("10.0.0.1")}}},
			{ID: "eni-2", DeviceIndex: 2, Addresses: []Address{{IP: ip("10.0.2.1")}}},
		}}, eni: "eni-2", ip: "10.0.2.1"},
		{name: "custom networking, only the primary has addresses: none", s: State{CustomNetworking: true, ENIs: []ENI{
			{ID: "eni-p", Primary: true, Addresses: []Address{{IP: ip("10.0.0.1")}}},
		}}},
		{name: "never an unmanaged ENI", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true},
			{ID: "eni-trunk", DeviceIndex: 1, Unmanaged: true, Addresses: []Address{{IP: ip("10.0.1.1")}}},
		}}},
		{name: "prefixes: the fullest /28 first, so the others stay whole", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Prefixes: []Prefix{
				{Prefix: pfx("10.1.0.0/28")},
				{Prefix: pfx("10.1.0.16/28"), Addresses: []Address{{IP: ip("10.1.0.16"), Assigned: true}, {IP: ip("10.1.0.18"), CooldownUntil: soon}}},
				{Prefix: pfx("10.1.0.32/28"), Addresses: []Address{{IP: ip("10.1.0.32"), Assigned: true}}},
			}},
		}}, eni: "eni-p", ip: "10.1.0.17"},
		{name: "prefixes: a full /28 is skipped, a cooling address inside one too", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Prefixes: []Prefix{
				{Prefix: pfx("10.1.0.0/28"), Addresses: fullPrefixAt("10.1.0.0")},
				{Prefix: pfx("10.1.0.16/28"), Addresses: []Address{{IP: ip("10.1.0.16"), CooldownUntil: soon}, {IP: ip("10.1.0.17"), CooldownUntil: past}}},
			}},
		}}, eni: "eni-p", ip: "10.1.0.17"},
		{name: "fallback addresses before the ENI's prefixes", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Addresses: []Address{{IP: ip("10.0.0.5")}}, Prefixes: []Prefix{
				{Prefix: pfx("10.1.0.0/28"), Addresses: []Address{{IP: ip("10.1.0.0"), Assigned: true}}}}},
		}}, eni: "eni-p", ip: "10.0.0.5"},
		{name: "a /28's last address", s: State{ENIs: []ENI{
			{ID: "eni-p", Primary: true, Prefixes: []Prefix{{Prefix: pfx("10.1.0.0/28"), Addresses: fullPrefixAt("10.1.0.0")[:15]}}},
		}}, eni: "eni-p", ip: "10.1.0.15"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eni, addr, ok := Pick(tt.s, now)
			if tt.eni == "" {
				if ok {
					t.Fatalf("Pick = %s %s, want none", eni, addr)
				}
				return
			}
			if !ok || eni != tt.eni || addr != ip(tt.ip) {
				t.Fatalf("Pick = %s %s %v, want %s %s", eni, addr, ok, tt.eni, tt.ip)
			}
		})
	}
}

// fullPrefixAt is every address of the /28 at base, assigned.
func fullPrefixAt(base string) []Address {
	a := netip.MustParseAddr(base)
	var out []Address
	for range 16 {
		out = append(out, Address{IP: a, Assigned: true})
		a = a.Next()
	}
	return out
}
