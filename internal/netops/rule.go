package netops

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rule is a policy routing rule (`ip rule`) of the current namespace:
// packets matching Src and Dst (zero: any) look up Table. Protocol marks
// who installed the rule (an RTPROT_* number, FRA_PROTOCOL): the kernel
// keeps it, and a delete that names it removes only a rule carrying it,
// so rules of a program are told from the operator's and other agents'.
type Rule struct {
	Priority int
	Src, Dst netip.Prefix
	Invert   bool // "not": the rule applies to packets that do not match
	Table    int  // 0 means main
	Protocol uint8
}

func (r Rule) String() string {
	from, to := "all", "all"
	if r.Src.IsValid() {
		from = r.Src.String()
	}
	if r.Dst.IsValid() {
		to = r.Dst.String()
	}
	not := ""
	if r.Invert {
		not = "not "
	}
	return fmt.Sprintf("%d: %sfrom %s to %s lookup %d proto %d", r.Priority, not, from, to, tableOrMain(r.Table), r.Protocol)
}

func (r Rule) kernel() (*netlink.Rule, error) {
	if r.Src.IsValid() && r.Dst.IsValid() && r.Src.Addr().Is4() != r.Dst.Addr().Is4() {
		return nil, fmt.Errorf("rule %s: source and destination are of different families", r)
	}
	if r.Priority < 0 {
		return nil, fmt.Errorf("rule %s: negative priority", r)
	}
	kr := netlink.NewRule()
	kr.Priority = r.Priority
	kr.Table = tableOrMain(r.Table)
	kr.Invert = r.Invert
	kr.Protocol = r.Protocol
	kr.Family = unix.AF_INET
	if r.Src.IsValid() {
		kr.Src = IPNet(r.Src.Masked())
		if r.Src.Addr().Is6() {
			kr.Family = unix.AF_INET6
		}
	}
	if r.Dst.IsValid() {
		kr.Dst = IPNet(r.Dst.Masked())
		if r.Dst.Addr().Is6() {
			kr.Family = unix.AF_INET6
		}
	}
	return kr, nil
}

// AddRule installs r. A rule that is already there is kept, not doubled:
// the kernel refuses an identical rule (EEXIST), which here means done, so
// a retried call converges.
func AddRule(r Rule) error {
	kr, err := r.kernel()
	if err != nil {
		return err
	}
	if err := netlink.RuleAdd(kr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("failed to add rule %s: %w", r, err)
	}
	return nil
}

// DeleteRule removes r; a rule that is not there is not an error.
func DeleteRule(r Rule) error {
	kr, err := r.kernel()
	if err != nil {
		return err
	}
	if err := netlink.RuleDel(kr); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to remove rule %s: %w", r, err)
	}
	return nil
}

// Rules returns the IPv4 and IPv6 rules of the current namespace that
// carry protocol, or all of them when protocol is 0. Selectors Rule does
// not model (iif, oif, fwmark, ports ...) are not reported: select by
// Protocol to find one's own rules.
func Rules(protocol uint8) ([]Rule, error) {
	var out []Rule
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		krs, err := retryInterruptedDump(func() ([]netlink.Rule, error) { return netlink.RuleList(family) })
		if err != nil {
			return nil, fmt.Errorf("failed to list rules: %w", err)
		}
		for _, kr := range krs {
			if protocol != 0 && kr.Protocol != protocol {
				continue
			}
			r := Rule{Priority: kr.Priority, Invert: kr.Invert, Table: kr.Table, Protocol: kr.Protocol}
			if r.Table == TableMain {
				r.Table = 0
			}
			if kr.Src != nil {
				r.Src = PrefixOf(kr.Src)
			}
			if kr.Dst != nil {
				r.Dst = PrefixOf(kr.Dst)
			}
			out = append(out, r)
		}
	}
	return out, nil
}
