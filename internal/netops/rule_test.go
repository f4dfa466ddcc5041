package netops_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

const testProto = 201 // a protocol number no one else in the test uses

func ruleStrings(rules []netops.Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}

// TestRulesConverge adds the rules of a routed pod twice, an inverted and
// an IPv6 rule once, reads them back, and shows that a delete naming the
// protocol leaves an identical rule of someone else's alone.
func TestRulesConverge(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	pod := netip.MustParsePrefix("10.7.0.5/32")
	want := []netops.Rule{
		{Priority: 512, Dst: pod, Protocol: testProto},
		{Priority: 1536, Src: pod, Table: 3, Protocol: testProto},
		{Priority: 1024, Dst: netip.MustParsePrefix("10.7.0.0/16"), Invert: true, Protocol: testProto},
		{Priority: 1536, Src: netip.MustParsePrefix("fd00:7::5/128"), Table: 300, Protocol: testProto},
	}
	err := n.Do(func(ns.NetNS) error {
		for range 2 {
			for _, r := range want[:2] {
				if err := netops.AddRule(r); err != nil {
					return err
				}
			}
		}
		for _, r := range want[2:] {
			if err := netops.AddRule(r); err != nil {
				return err
			}
		}
		got, err := netops.Rules(testProto)
		if err != nil {
			return err
		}
		if !slices.Equal(ruleStrings(got), ruleStrings(want)) {
			t.Errorf("rules = %v\nwant %v", ruleStrings(got), ruleStrings(want))
		}
		all, err := netops.Rules(0)
		if err != nil {
			return err
		}
		if len(all) <= len(want) {
			t.Errorf("Rules(0) = %v: the kernel's own rules (local, main, default) are missing", ruleStrings(all))
		}

		// Someone else's rule with the same selectors survives our delete.
		foreign := netops.Rule{Priority: 512, Dst: pod, Protocol: 4}
		if err := netops.AddRule(foreign); err != nil {
			return err
		}
		for range 2 {
			for _, r := range want {
				if err := netops.DeleteRule(r); err != nil {
					return err
				}
			}
		}
		if got, _ := netops.Rules(testProto); len(got) != 0 {
			t.Errorf("after deleting: %v", ruleStrings(got))
		}
		if got, _ := netops.Rules(4); !slices.Equal(ruleStrings(got), ruleStrings([]netops.Rule{foreign})) {
			t.Errorf("the foreign rule: have %v, want it kept", ruleStrings(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRuleRejectsMixedFamilies(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	err := n.Do(func(ns.NetNS) error {
		return netops.AddRule(netops.Rule{Priority: 5, Src: netip.MustParsePrefix("10.0.0.1/32"), Dst: netip.MustParsePrefix("fd00::1/128")})
	})
	if err == nil {
		t.Fatal("a rule from an IPv4 to an IPv6 prefix was accepted")
	}
}
