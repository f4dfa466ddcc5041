package task

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// Which bridge port a request came in on.
//
// The endpoint tells tasks apart by their address on the metadata bridge,
// and an address is only a claim: a task allowed NET_ADMIN (--cap-add,
// --privileged) can take another task's address and MAC. What it cannot
// change is the bridge port its frames enter by, the host end of its own
// veth. So the endpoint checks the port, not just the address:
//
//   - a rule in a bridge-family nftables table of the endpoint's own
//     (vpcnet-task-endpoint, in the instance namespace) marks every frame
//     entering a bridge by one of vpc-bridge's ports with the index of the
//     port (mark = arrivalMarkBase | ifindex);
//   - net.ipv4.tcp_fwmark_accept=1 in the instance namespace makes an
//     accepted TCP connection carry the mark of the SYN that opened it;
//   - the endpoint reads the accepted socket's SO_MARK, and answers only
//     when the port is the one the task's own veth is on (Record.BridgePort,
//     from vpc-bridge's result).
//
// A spoofed SYN therefore names the spoofer's port, and the request is
// refused. The mark stays on the endpoint's sockets; no routing rule of
// vpcnet matches it (the base keeps it clear of small marks others use).
// Neither the neighbour table nor the bridge's FDB would do: both learn
// from the frames a task sends, so they follow a spoofed MAC.

const (
	// bridgePortPrefix starts the name of every host veth vpc-bridge
	// makes (it names them "vbr" + a hash of the attachment). Should it
	// change, the endpoint refuses every task: tests fail loudly.
	bridgePortPrefix = "vbr"
	arrivalTable     = "vpcnet-task-endpoint"
	arrivalMarkBase  = 0x7e000000
	arrivalMarkMask  = 0x00ffffff
)

// ensureArrivalMarks installs the marking rule (replacing the table, so
// that it holds exactly the one rule) and turns on tcp_fwmark_accept, in
// the current namespace.
func ensureArrivalMarks() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	table := &nftables.Table{Name: arrivalTable, Family: nftables.TableFamilyBridge}
	// Delete-then-add in one transaction: add first so that the delete
	// never fails on a missing table.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	accept := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300), Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		// iifname "vbr*": the kernel here has no "meta ibrname" (the
		// bridge's name); vpc-bridge's ports are recognised by name.
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(bridgePortPrefix)},
		&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(arrivalMarkMask),
			Xor:  binaryutil.NativeEndian.PutUint32(arrivalMarkBase)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install the nftables table %s that marks the metadata bridge's ports: %w", arrivalTable, err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_fwmark_accept", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set net.ipv4.tcp_fwmark_accept: %w", err)
	}
	return nil
}

// removeArrivalMarks deletes the endpoint's table (best effort: a
// retiring endpoint).
func removeArrivalMarks() {
	c, err := nftables.New()
	if err != nil {
		return
	}
	c.DelTable(&nftables.Table{Name: arrivalTable, Family: nftables.TableFamilyBridge})
	_ = c.Flush()
}

// arrivalKey keys the port of a request's connection in its context.
type arrivalKey struct{}

// arrival is where a connection came in: the bridge port's name, or ""
// when it did not come through the metadata bridge.
type arrival struct{ port string }

// connArrival is http.Server.ConnContext: it reads the connection's mark
// once and puts the port it names in the context of its requests.
func connArrival(ctx context.Context, c net.Conn) context.Context {
	a := arrival{}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			var mark int
			var gerr error
			_ = raw.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
			if gerr == nil && mark&^arrivalMarkMask == arrivalMarkBase {
				if l, err := netops.LinkByIndex(mark & arrivalMarkMask); err == nil {
					a.port = l.Attrs().Name
				}
			}
		}
	}
	return context.WithValue(ctx, arrivalKey{}, a)
}
