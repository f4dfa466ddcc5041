package fabric

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// The fabric's firewall is one nftables table in the fabric namespace. It
// does two jobs:
//
//   - source/destination check: a packet coming from an ENI must carry a
//     source address assigned to that ENI (addresses and prefixes), unless
//     the ENI's check is off;
//   - security groups: stateful allow rules, egress checked where a packet
//     enters the fabric from its ENI (prerouting, where the input device is
//     known), ingress where it leaves towards the ENI it is delivered to
//     (forward, where the output device is known). Both must accept a new
//     connection; replies pass as established.
//
// Each ENI has two chains, reached through verdict maps keyed by device
// name. A device that exists before its map entry does (Apply creates
// devices first) meets the base chains' drop policy: the datapath fails
// closed. An ENI's own addresses and a security group's members are named
// sets, so assigning an address or joining a group adds set elements and
// rewrites no chain.
//
// The table is generated whole from the spec as a value (table). Apply
// loads it with one nft transaction: the whole table when it does not know
// what the kernel holds, or only the difference from the table it loaded
// last (update), which a fingerprint stored in the table proves is still
// there. Either way no packet sees a half-updated firewall. A transaction
// that deletes anything waits for the kernel's RCU grace period (about
// 10 ms here, against 3 ms for one that only adds), so the common changes,
// attaching an ENI, assigning an address, joining a group, only add.

// tableName is the table in the fabric namespace. The namespace is the VPC's
// own, so the name need not carry the VPC's.
const tableName = "vpcnet"

// Names of the fixed parts of the table.
const (
	outMap           = "eni-out" // input device -> the ENI's egress chain
	inMap            = "eni-in"  // output device -> the ENI's ingress chain
	fingerprintChain = "fingerprint"
)

// table is the firewall of one fabric. Sets and Chains hold the parts that
// vary with the spec; the base chains are fixed.
type table struct {
	Sets   map[string]nftSet   // by name
	Chains map[string][]string // ENI chains: name -> rules, in order
	Out    map[string]string   // device -> egress chain
	In     map[string]string   // device -> ingress chain
}

type nftSet struct {
	Type     string   // "ipv4_addr" or "ipv6_addr"
	Elements []string // sorted, none inside another
}

// buildTable computes the firewall of spec, which must be valid.
func buildTable(spec Spec) table {
	t := table{Sets: map[string]nftSet{}, Chains: map[string][]string{}, Out: map[string]string{}, In: map[string]string{}}

	var local []netip.Prefix
	for _, a := range spec.LocalAddrs {
		local = append(local, netip.PrefixFrom(a, a.BitLen()))
	}
	members := groupMembers(spec)
	groups := map[string]SecurityGroup{}
	for _, g := range spec.Groups {
		groups[g.ID] = g
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			for _, ref := range r.Groups {
				for _, fam := range []family{ipv4, ipv6} {
					t.Sets[groupSet(ref, fam)] = fam.set(members[ref])
				}
			}
		}
	}
	for _, fam := range []family{ipv4, ipv6} {
		t.Sets[localSet(fam)] = fam.set(local)
	}

	for _, eni := range spec.Interfaces {
		var ingress, egress []Rule
		for _, id := range eni.Groups {
			ingress = append(ingress, groups[id].Ingress...)
			egress = append(egress, groups[id].Egress...)
		}
		dev := deviceName(eni.ID)
		out, in := eni.ID+"-out", eni.ID+"-in"
		t.Out[dev], t.In[dev] = out, in

		var rules []string
		own := slices.Concat(prefixesOf(eni.IPv4), eni.IPv4Prefixes, prefixesOf(eni.IPv6), eni.IPv6Prefixes)
		for _, fam := range []family{ipv4, ipv6} {
			t.Sets[ownSet(eni.ID, fam)] = fam.set(own)
			if eni.SourceDestCheck {
				rules = append(rules, fmt.Sprintf("%s saddr != @%s drop", fam.keyword(), ownSet(eni.ID, fam)))
			}
		}
		rules = append(rules, "ct state established,related accept")
		// The control plane's own addresses are reachable whatever the
		// security groups say, as the instance metadata service is on EC2.
		for _, fam := range []family{ipv4, ipv6} {
			rules = append(rules, fmt.Sprintf("%s daddr @%s accept", fam.keyword(), localSet(fam)))
		}
		rules = append(rules, ruleLines(egress, "daddr")...)
		t.Chains[out] = append(rules, "drop")

		rules = []string{"ct state established,related accept"}
		rules = append(rules, ruleLines(ingress, "saddr")...)
		t.Chains[in] = append(rules, "drop")
	}
	if spec.External.IsValid() {
		// The internet side of an internet gateway: whatever it sends
		// into the VPC meets the security groups of the ENI it is for
		// (forward), but the VPC's own services (metadata, the in-VPC
		// endpoint) are not for it. What reaches it passed its ENI's
		// egress rules already.
		t.Out[externalDevice], t.In[externalDevice] = externalOut, externalIn
		t.Chains[externalOut] = []string{
			"ct state established,related accept",
			fmt.Sprintf("ip daddr @%s drop", localSet(ipv4)),
			fmt.Sprintf("ip6 daddr @%s drop", localSet(ipv6)),
			"accept",
		}
		t.Chains[externalIn] = []string{"accept"}
	}
	return t
}

// fingerprint identifies the table's content; the loaded table carries it
// as the comment of the one rule of its fingerprint chain.
func (t table) fingerprint() string {
	sum := sha256.Sum256([]byte(t.body()))
	return "sha256:" + hex.EncodeToString(sum[:12])
}

// script returns the nft script that replaces whatever table the fabric
// has with t. Creating the table first makes the delete valid when there
// is none.
func (t table) script() string {
	return fmt.Sprintf("table inet %[1]s {}\ndelete table inet %[1]s\n%[2]s", tableName, t.text())
}

// text renders the table as nft shows it.
func (t table) text() string {
	return fmt.Sprintf("table inet %s {\n%s\tchain %s {\n\t\treturn comment %q\n\t}\n}\n", tableName, t.body(), fingerprintChain, t.fingerprint())
}

func (t table) body() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	for _, name := range slices.Sorted(maps.Keys(t.Sets)) {
		w("\tset %s { %s }", name, t.Sets[name].definition())
	}
	w("\tmap %s { type ifname : verdict;%s }", outMap, vmapElements(t.Out, " elements = { ", " };"))
	w("\tmap %s { type ifname : verdict;%s }", inMap, vmapElements(t.In, " elements = { ", " };"))
	w("\tchain prerouting {")
	w("\t\ttype filter hook prerouting priority filter; policy drop;")
	w("\t\tiifname \"lo\" accept")
	// Neighbour discovery is the link's plumbing, answered by the fabric
	// itself (proxy NDP), not traffic a security group sees. A hop limit
	// of 255 proves it was not forwarded.
	w("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept")
	w("\t\tiifname vmap @%s", outMap)
	w("\t}")
	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy drop;")
	w("\t\toifname vmap @%s", inMap)
	w("\t}")
	for _, name := range slices.Sorted(maps.Keys(t.Chains)) {
		w("\tchain %s {", name)
		for _, r := range t.Chains[name] {
			w("\t\t%s", r)
		}
		w("\t}")
	}
	return b.String()
}

func (s nftSet) definition() string {
	d := "type " + s.Type + "; flags interval;"
	if len(s.Elements) > 0 {
		d += " elements = { " + strings.Join(s.Elements, ", ") + " };"
	}
	return d
}

func vmapElements(m map[string]string, open, close string) string {
	if len(m) == 0 {
		return ""
	}
	var e []string
	for _, dev := range slices.Sorted(maps.Keys(m)) {
		e = append(e, fmt.Sprintf("%q : goto %s", dev, m[dev]))
	}
	return open + strings.Join(e, ", ") + close
}

// update returns the nft script that turns the loaded table old into t, in
// one transaction: only the set elements, chains and map entries that
// differ. Within the transaction, set elements go first (an interval set
// refuses an overlap even with an element on its way out), then what is
// added or rewritten, then what is removed, so that whatever a rule or map
// entry refers to exists before it and outlives it.
//
// The new fingerprint is inserted ahead of the stale ones rather than
// replacing them, which would be a deletion; stale is how many the chain
// holds. They are flushed along with any other deletion, or once
// maxStaleFingerprints have piled up; flushed reports it.
func (t table) update(old table, stale int) (script string, flushed bool) {
	var elements, additions, removals strings.Builder
	w := func(b *strings.Builder, format string, a ...any) { fmt.Fprintf(b, format+"\n", a...) }
	deletes := false

	for _, name := range slices.Sorted(maps.Keys(t.Sets)) {
		s := t.Sets[name]
		was, existed := old.Sets[name]
		if !existed {
			w(&additions, "add set inet %s %s { %s }", tableName, name, s.definition())
			continue
		}
		added, removed := diffSets(s.Elements, was.Elements)
		if len(removed) > 0 {
			w(&elements, "delete element inet %s %s { %s }", tableName, name, strings.Join(removed, ", "))
			deletes = true
		}
		if len(added) > 0 {
			w(&elements, "add element inet %s %s { %s }", tableName, name, strings.Join(added, ", "))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(t.Chains)) {
		rules, was := t.Chains[name], old.Chains[name]
		switch {
		case was == nil:
			w(&additions, "add chain inet %s %s", tableName, name)
		case slices.Equal(rules, was):
			continue
		default:
			w(&additions, "flush chain inet %s %s", tableName, name)
			deletes = true
		}
		for _, r := range rules {
			w(&additions, "add rule inet %s %s %s", tableName, name, r)
		}
	}
	for _, m := range []struct {
		name     string
		new, old map[string]string
	}{{outMap, t.Out, old.Out}, {inMap, t.In, old.In}} {
		added := map[string]string{}
		for dev, chain := range m.new {
			if m.old[dev] != chain {
				added[dev] = chain
			}
		}
		if len(added) > 0 {
			w(&additions, "add element inet %s %s%s", tableName, m.name, vmapElements(added, " { ", " }"))
		}
		for _, dev := range slices.Sorted(maps.Keys(m.old)) {
			if m.new[dev] != m.old[dev] {
				w(&removals, "delete element inet %s %s { %q }", tableName, m.name, dev)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old.Chains)) {
		if _, ok := t.Chains[name]; !ok {
			w(&removals, "delete chain inet %s %s", tableName, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old.Sets)) {
		if _, ok := t.Sets[name]; !ok {
			w(&removals, "delete set inet %s %s", tableName, name)
		}
	}
	flushed = deletes || removals.Len() > 0 || stale >= maxStaleFingerprints
	if flushed {
		w(&removals, "flush chain inet %s %s", tableName, fingerprintChain)
	}
	w(&removals, "insert rule inet %s %s return comment %q", tableName, fingerprintChain, t.fingerprint())
	return elements.String() + additions.String() + removals.String(), flushed
}

// maxStaleFingerprints bounds the fingerprints that pile up in the
// fingerprint chain between deletions.
const maxStaleFingerprints = 32

// groupMembers returns, per security group, the addresses and prefixes of
// every ENI in it.
func groupMembers(spec Spec) map[string][]netip.Prefix {
	m := map[string][]netip.Prefix{}
	for _, eni := range spec.Interfaces {
		own := slices.Concat(prefixesOf(eni.IPv4), eni.IPv4Prefixes, prefixesOf(eni.IPv6), eni.IPv6Prefixes)
		for _, g := range eni.Groups {
			m[g] = append(m[g], own...)
		}
	}
	return m
}

// ruleLines renders security group rules as nft rules matching the peer by
// peerField ("saddr" for ingress, "daddr" for egress). The result is sorted
// and without duplicates: rules are allow-only, so their order is
// irrelevant, and a stable text keeps the fingerprint stable.
func ruleLines(rules []Rule, peerField string) []string {
	var lines []string
	for _, r := range rules {
		proto, _ := r.protocol()
		for _, fam := range []family{ipv4, ipv6} {
			match, ok := fam.protocolMatch(proto, r.FromPort, r.ToPort)
			if !ok {
				continue
			}
			var peers []string
			var cidrs []netip.Prefix
			for _, c := range r.CIDRs {
				if fam.has(c.Addr()) {
					cidrs = append(cidrs, c.Masked())
				}
			}
			switch {
			case slices.ContainsFunc(cidrs, func(c netip.Prefix) bool { return c.Bits() == 0 }):
				peers = append(peers, "meta nfproto "+fam.name())
			case len(cidrs) > 0:
				peers = append(peers, fmt.Sprintf("%s %s { %s }", fam.keyword(), peerField, fam.elements(cidrs)))
			}
			for _, g := range r.Groups {
				peers = append(peers, fmt.Sprintf("%s %s @%s", fam.keyword(), peerField, groupSet(g, fam)))
			}
			for _, p := range peers {
				lines = append(lines, strings.TrimSpace(p+" "+match)+" accept")
			}
		}
	}
	slices.Sort(lines)
	return slices.Compact(lines)
}

func groupSet(id string, fam family) string { return id + "-" + fam.short() }

func localSet(fam family) string { return "local-" + fam.short() }

// ownSet holds an ENI's addresses and prefixes, for its source check.
func ownSet(eniID string, fam family) string { return eniID + "-" + fam.short() }

type family int

const (
	ipv4 family = 4
	ipv6 family = 6
)

func (f family) name() string {
	if f == ipv4 {
		return "ipv4"
	}
	return "ipv6"
}

func (f family) short() string {
	if f == ipv4 {
		return "v4"
	}
	return "v6"
}

// keyword is the nft payload protocol of the family.
func (f family) keyword() string {
	if f == ipv4 {
		return "ip"
	}
	return "ip6"
}

func (f family) has(a netip.Addr) bool { return a.Is4() == (f == ipv4) }

// set returns an address set of family f holding the prefixes of that
// family among ps.
func (f family) set(ps []netip.Prefix) nftSet {
	return nftSet{Type: f.name() + "_addr", Elements: f.elementList(ps)}
}

// elements renders the prefixes of family f as nft set elements.
func (f family) elements(ps []netip.Prefix) string { return strings.Join(f.elementList(ps), ", ") }

// elementList returns the prefixes of family f as nft set elements, sorted.
// Prefixes inside another one are dropped: interval sets refuse overlaps.
func (f family) elementList(ps []netip.Prefix) []string {
	var mine []netip.Prefix
	for _, p := range ps {
		if f.has(p.Addr()) {
			mine = append(mine, p.Masked())
		}
	}
	slices.SortFunc(mine, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits() // the wider first, so it absorbs the narrower
	})
	var out []string
	var last netip.Prefix
	for _, p := range mine {
		if last.IsValid() && last.Overlaps(p) {
			continue // sorted by address, wider first: p lies inside last
		}
		last = p
		if p.IsSingleIP() {
			out = append(out, p.Addr().String())
		} else {
			out = append(out, p.String())
		}
	}
	return out
}

// protocolMatch renders a rule's protocol and ports for family f; ok is
// false when the rule cannot match packets of that family (ICMPv4 over
// IPv6).
func (f family) protocolMatch(proto string, from, to int) (match string, ok bool) {
	switch proto {
	case "all":
		return "", true
	case "tcp", "udp":
		switch {
		case from == -1 || (from == 0 && to == 65535):
			return "meta l4proto " + proto, true
		case from == to:
			return fmt.Sprintf("%s dport %d", proto, from), true
		default:
			return fmt.Sprintf("%s dport %d-%d", proto, from, to), true
		}
	case "icmp", "icmpv6":
		if (proto == "icmp") != (f == ipv4) {
			return "", false
		}
		l4 := map[string]string{"icmp": "icmp", "icmpv6": "ipv6-icmp"}[proto]
		switch {
		case from == -1:
			return "meta l4proto " + l4, true
		case to == -1:
			return fmt.Sprintf("%s type %d", proto, from), true
		default:
			return fmt.Sprintf("%s type %d %s code %d", proto, from, proto, to), true
		}
	default:
		return "meta l4proto " + proto, true
	}
}

func prefixesOf(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}
