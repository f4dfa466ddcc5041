package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// Node networking: what the node needs besides the pods' own veths (which
// vpc-pod wires), in the namespace the agent runs in (the node's).
//
//   - Each secondary ENI: link up with its MTU and a routing table of its
//     own (number: device index + 1) holding `GW dev ethN scope link` and
//     `default via GW dev ethN`, so that a pod whose address belongs to
//     that ENI leaves through it (vpc-pod adds `from POD lookup TABLE`):
//     the VPC's source/destination check drops a packet that leaves
//     through an ENI that does not own its source.
//   - Unless external SNAT: rule `1024: not to VPC-CIDR lookup main` (off-VPC
//     traffic of every pod leaves through the primary ENI) and an nftables
//     table `ip vpcnet-node` that rewrites the source of packets leaving the
//     primary ENI for outside the VPC to the node's primary address, as a
//     pod address is only routable inside the VPC.
//   - rp_filter loose (2) on the primary ENI and ip_forward on, as an EKS
//     AMI sets them: replies to SNATed pod traffic arrive on eth0 for
//     addresses routed elsewhere.
//
// Every rule carries nodeapi.RuleProtocol and every route lives in a table the
// agent owns, so Cleanup removes exactly what the agent made.

// Rule priorities, as aws-node uses them.
const (
	priorityOffVPC     = 1024 // not to VPC lookup main; vpc-pod's per-pod rules are 512 and 1536
	nftNodeTable       = "vpcnet-node"
	nftNodeChain       = "snat"
	nftNodeRuleComment = "vpcnetd: SNAT of pod traffic leaving the VPC"
)

// NodeNetwork is the agent's seam to the kernel of its node.
type NodeNetwork interface {
	// SetupENI brings a secondary ENI's device up and fills its table.
	SetupENI(e *ENI, mtu int) error
	// TeardownENI empties the table of an ENI that is leaving.
	TeardownENI(e *ENI) error
	// SetupHost installs the SNAT path (or removes it with external SNAT).
	SetupHost(h HostNetwork) error
	// Cleanup removes every rule, route and table the agent made.
	Cleanup() error
	// WaitDevice waits for an attached ENI's device to appear.
	WaitDevice(ctx context.Context, e *ENI) error
	// HasLink says whether a link of that name exists (a pod's host veth).
	HasLink(name string) bool
}

// HostNetwork is what SetupHost needs to know of the node.
type HostNetwork struct {
	PrimaryIP     netip.Addr
	PrimaryIface  string
	VPCCIDRs      []netip.Prefix
	ExcludeSNAT   []netip.Prefix
	ExternalSNAT  bool
	RandomizeSNAT bool
}

// KernelNetwork is NodeNetwork on the current network namespace.
type KernelNetwork struct {
	// NSPath is the namespace whose links WaitDevice watches: the one the
	// agent runs in, unless a test says otherwise.
	NSPath string

	// Sysctl is the root of /proc/sys; tests point it elsewhere only to
	// read what was written. Empty means /proc/sys.
	Sysctl string
}

var _ NodeNetwork = (*KernelNetwork)(nil)

// WaitDevice implements NodeNetwork: EC2 attaches asynchronously and the
// device shows up seconds later; netlink tells the moment it does.
func (k *KernelNetwork) WaitDevice(ctx context.Context, e *ENI) error {
	p := k.NSPath
	if p == "" {
		p = "/proc/self/ns/net"
	}
	_, err := netops.WaitForLink(ctx, p, e.MAC)
	return err
}

// HasLink implements NodeNetwork.
func (k *KernelNetwork) HasLink(name string) bool {
	_, err := netops.LinkByName(name)
	return err == nil
}

// SetupENI implements NodeNetwork.
func (k *KernelNetwork) SetupENI(e *ENI, mtu int) error {
	if e.Primary {
		return nil
	}
	link, err := netops.LinkByMAC(e.MAC)
	if err != nil {
		return fmt.Errorf("set up ENI %s: %w", e.ID, err)
	}
	name := link.Attrs().Name
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netops.SetMTU(link, mtu); err != nil {
			return fmt.Errorf("ENI %s: %w", e.ID, err)
		}
	}
	if err := netops.SetLinkUp(link); err != nil {
		return fmt.Errorf("ENI %s: %w", e.ID, err)
	}
	// A routed ENI answers for its own source address only on its own
	// link; rp_filter loose keeps the kernel from dropping replies that
	// arrive on it for pods.
	if err := k.write(filepath.Join("net/ipv4/conf", name, "rp_filter"), "2"); err != nil {
		return err
	}
	gw := e.Gateway()
	table := e.RouteTable()
	for _, r := range []netops.TableRoute{
		{Table: table, Dst: netip.PrefixFrom(gw, 32), LinkIndex: link.Attrs().Index},
		{Table: table, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gw: gw, LinkIndex: link.Attrs().Index},
	} {
		if err := netops.ReplaceTableRoute(r); err != nil {
			return fmt.Errorf("route table of ENI %s (%s): %w", e.ID, name, err)
		}
	}
	return nil
}

// TeardownENI implements NodeNetwork.
func (k *KernelNetwork) TeardownENI(e *ENI) error {
	if e.Primary {
		return nil
	}
	return flushTable(e.RouteTable())
}

func flushTable(table int) error {
	routes, err := netops.TableRoutes(table, 0)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := netops.DeleteTableRoute(r); err != nil {
			return err
		}
	}
	return nil
}

// SetupHost implements NodeNetwork.
func (k *KernelNetwork) SetupHost(h HostNetwork) error {
	if err := k.write("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if h.PrimaryIface != "" {
		if err := k.write(filepath.Join("net/ipv4/conf", h.PrimaryIface, "rp_filter"), "2"); err != nil {
			return err
		}
	}
	want := map[netops.Rule]bool{}
	if !h.ExternalSNAT {
		for _, c := range h.VPCCIDRs {
			want[netops.Rule{Priority: priorityOffVPC, Dst: c.Masked(), Invert: true, Protocol: nodeapi.RuleProtocol}] = true
		}
	}
	// Converge the agent's 1024 rules: add what is wanted, remove the
	// rest (a VPC CIDR that went away, or external SNAT turned on).
	have, err := netops.Rules(nodeapi.RuleProtocol)
	if err != nil {
		return err
	}
	for _, r := range have {
		if r.Priority == priorityOffVPC && !want[r] {
			if err := netops.DeleteRule(r); err != nil {
				return err
			}
		}
	}
	for r := range want {
		if err := netops.AddRule(r); err != nil {
			return err
		}
	}
	if h.ExternalSNAT {
		return deleteSNATTable()
	}
	return writeSNATTable(h)
}

// Cleanup implements NodeNetwork: the agent's rules, the per-ENI tables
// its rules point at, and its nftables table. vpc-pod's per-pod rules are
// the plugin's (its DEL removes them); Cleanup removes those too, as it is
// meant for a node that stops running pods.
func (k *KernelNetwork) Cleanup() error {
	rules, err := netops.Rules(nodeapi.RuleProtocol)
	if err != nil {
		return err
	}
	tables := map[int]bool{}
	for _, r := range rules {
		if r.Table != 0 {
			tables[r.Table] = true
		}
		if err := netops.DeleteRule(r); err != nil {
			return err
		}
	}
	// Tables of ENIs: their numbers are device index + 1 (2 .. 16 cover
	// every instance type's ENIs with room); only tables no rule of
	// anyone else points at could be ours, and we own those numbers.
	for t := 2; t <= 32; t++ {
		tables[t] = true
	}
	for t := range tables {
		if err := flushTable(t); err != nil {
			return err
		}
	}
	return deleteSNATTable()
}

func (k *KernelNetwork) write(rel, value string) error {
	root := k.Sysctl
	if root == "" {
		root = "/proc/sys"
	}
	p := filepath.Join(root, rel)
	if cur, err := os.ReadFile(p); err == nil && string(cur) == value+"\n" {
		return nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", rel, value, err)
	}
	return nil
}

var (
	nftNode       = &nftables.Table{Name: nftNodeTable, Family: nftables.TableFamilyIPv4}
	nftNodeAccept = nftables.ChainPolicyAccept
)

func nftNodeChainOf() *nftables.Chain {
	return &nftables.Chain{
		Name: nftNodeChain, Table: nftNode, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		Policy: &nftNodeAccept,
	}
}

// writeSNATTable replaces the agent's table in one transaction:
//
//	table ip vpcnet-node {
//		chain snat {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip daddr VPC-CIDR return            (one per VPC CIDR and excluded CIDR)
//			oifname PRIMARY ip saddr != PRIMARY-IP snat to PRIMARY-IP fully-random
//		}
//	}
//
// fully-random, as aws-node's default (AWS_VPC_K8S_CNI_RANDOMIZESNAT=prng):
// pods that pick the same source port do not collide on the node's one
// address.
func writeSNATTable(h HostNetwork) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	chain := nftNodeChainOf()
	c.AddTable(nftNode)
	c.AddChain(chain)
	c.FlushChain(chain)
	for _, p := range append(append([]netip.Prefix(nil), h.VPCCIDRs...), h.ExcludeSNAT...) {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		mask := netipMask4(p.Bits())
		c.AddRule(&nftables.Rule{Table: nftNode, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, h.PrimaryIface)
	primary := h.PrimaryIP.AsSlice()
	c.AddRule(&nftables.Rule{Table: nftNode, Chain: chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: primary},
		&expr.Immediate{Register: 1, Data: primary},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1,
			FullyRandom: true},
	}, UserData: userdata.AppendString(nil, userdata.TypeComment, nftNodeRuleComment)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table ip %s (SNAT to %s): %w", nftNodeTable, h.PrimaryIP, err)
	}
	return nil
}

func deleteSNATTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == nftNodeTable {
			c.DelTable(nftNode)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("delete nftables table ip %s: %w", nftNodeTable, err)
			}
		}
	}
	return nil
}

func netipMask4(bits int) []byte {
	m := make([]byte, 4)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}
