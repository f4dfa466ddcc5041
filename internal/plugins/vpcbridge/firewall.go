package vpcbridge

import (
	"bytes"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// Layer-3 isolation. Isolated bridge ports keep containers apart at layer
// 2, but a host that forwards IPv4 or IPv6 (ip_forward=1, as on Docker
// hosts) would route a packet that a container sends to the gateway
// for another container's address back out of the bridge: a task that adds
// a route to the bridge subnet via the gateway reaches the other tasks.
// vpc-bridge therefore keeps one small nftables table of its own in the
// namespace it runs in:
//
//	table inet vpcnet-bridge {
//		set bridges {
//			type ifname . ifname
//			elements = { "ecs-bridge" . "ecs-bridge" }
//		}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname . oifname @bridges counter drop comment "..."
//		}
//	}
//
// A packet forwarded from one of our bridges back into the same bridge is
// dropped; nothing else is touched (policy accept, and every other base
// chain of the host still has its say). The counter shows an operator that
// it happens. (A reject would not fail the sender any faster: the host
// sends an ICMP redirect for such a packet before the forward hook, and the
// per-host ICMP rate limit then swallows the reject's error.) Where
// br_netfilter is loaded, bridged IP packets between ports pass the
// forward hook too and are dropped as well, a second wall behind port
// isolation. The one rule is fixed and each bridge is an element of the
// set, so adding a bridge is an idempotent element insertion, safe when
// many ADDs race.
//
// Every ADD makes sure its bridge is covered (ensureIsolation): three small
// reads when all is in place, else one atomic transaction that creates
// what is missing and rewrites the chain to exactly the one rule. An ADD
// that cannot do so fails: vpc-bridge does not connect a container to a
// bridge where others could reach it. STATUS reports code 50 (not
// available, rather than 51, limited connectivity: ADDs would fail, not
// succeed with less) when nftables does not answer at all in the
// namespace, e.g. without CAP_NET_ADMIN or without nf_tables.
//
// The element stays as long as the bridge, which vpc-bridge never deletes:
// like the bridge and its gateway address it is shared by every container,
// and removing it on the last DEL would race with the next ADD. An element
// whose bridge is gone matches nothing.

// Names in the nftables table.
const (
	nftTableName = "vpcnet-bridge"
	nftSetName   = "bridges"
	nftChainName = "forward"
	// nftRuleComment tags the rule, so that a check can tell it is ours.
	nftRuleComment = "vpc-bridge: no routing between the ports of one bridge"
)

var (
	nftTable  = &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}
	nftAccept = nftables.ChainPolicyAccept
	nftChain  = &nftables.Chain{
		Name:     nftChainName,
		Table:    nftTable,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &nftAccept,
	}
)

// newNftSet describes the set of bridges. Its ID names it within one
// transaction, for the rule's lookup; giving it here keeps the library from
// drawing one from a counter shared by the whole process.
func newNftSet() *nftables.Set {
	return &nftables.Set{
		Table:         nftTable,
		Name:          nftSetName,
		ID:            1,
		KeyType:       nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName),
		Concatenation: true,
	}
}

// isolationRule is the chain's one rule:
// iifname . oifname @bridges counter drop.
func isolationRule(nftSet *nftables.Set) *nftables.Rule {
	return &nftables.Rule{
		Table: nftTable,
		Chain: nftChain,
		Exprs: []expr.Any{
			// Each name fills a 16-byte register; the two side by side
			// are the concatenated key the set holds.
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 2},
			&expr.Lookup{SourceRegister: 1, SetName: nftSet.Name, SetID: nftSet.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, nftRuleComment),
	}
}

// bridgeKey is the set element of bridge: its name twice, each padded to
// IFNAMSIZ as the kernel loads interface names into registers.
func bridgeKey(bridge string) []byte {
	key := make([]byte, 2*unix.IFNAMSIZ)
	copy(key, bridge)
	copy(key[unix.IFNAMSIZ:], bridge)
	return key
}

// ensureIsolation makes sure packets are not routed between the ports of
// the bridge, in the current network namespace.
func ensureIsolation(bridge string) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nftError(bridge, err)
	}
	defer c.CloseLasting()
	if isolationInPlace(c, bridge) {
		return nil
	}
	// One transaction: the table, set and chain are created if missing
	// (never replaced), the element added, and the chain flushed and given
	// its rule, so that however many ADDs run it at once, the chain ends
	// with exactly one rule and the set with every bridge.
	c.AddTable(nftTable)
	nftSet := newNftSet()
	if err := c.AddSet(nftSet, nil); err != nil {
		return nftError(bridge, err)
	}
	if err := c.SetAddElements(nftSet, []nftables.SetElement{{Key: bridgeKey(bridge)}}); err != nil {
		return nftError(bridge, err)
	}
	c.AddChain(nftChain)
	c.FlushChain(nftChain)
	c.AddRule(isolationRule(nftSet))
	if err := c.Flush(); err != nil {
		return nftError(bridge, err)
	}
	return nil
}

// isolationInPlace reports whether the table already refuses routing
// between the ports of bridge: the chain is a forward base chain holding
// only our rule, and the set holds the bridge. Any error reading it counts
// as "no": the transaction that follows repairs it or says what is wrong.
func isolationInPlace(c *nftables.Conn, bridge string) bool {
	chain, err := c.ListChain(nftTable, nftChainName)
	if err != nil || chain.Hooknum == nil || *chain.Hooknum != *nftables.ChainHookForward || chain.Type != nftables.ChainTypeFilter {
		return false
	}
	rules, err := c.GetRules(nftTable, nftChain)
	if err != nil || len(rules) != 1 {
		return false
	}
	if comment, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment); comment != nftRuleComment {
		return false
	}
	elems, err := c.GetSetElements(newNftSet())
	if err != nil {
		return false
	}
	key := bridgeKey(bridge)
	for _, e := range elems {
		if bytes.Equal(e.Key, key) {
			return true
		}
	}
	return false
}

// isolationActive reports, for CHECK, whether the table refuses routing
// between the ports of bridge.
func isolationActive(bridge string) bool {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return false
	}
	defer c.CloseLasting()
	return isolationInPlace(c, bridge)
}

// isolationStatus reports, for STATUS, whether nftables answers in the
// current namespace: without it an ADD cannot isolate its container.
func isolationStatus(bridge string) error {
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	}
	if err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable,
			"nftables cannot be used (%v): vpc-bridge needs it to stop the host from routing between the containers on bridge %s", err, bridge)
	}
	return nil
}

func nftError(bridge string, err error) error {
	return cni.Errorf(cni.CodeInternal,
		"failed to make sure nftables table inet %s refuses routing between the ports of bridge %s (containers could reach each other through the host): %v",
		nftTableName, bridge, err)
}
