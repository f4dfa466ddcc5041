package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ErrNamespace marks DialLine's failure to enter the namespace, as opposed
// to a failed connection: a test that expects no connection must not take
// the one for the other.
var ErrNamespace = errors.New("cannot enter the network namespace")

// DialLine connects over TCP from namespace n to address (from the source
// address src, if valid) and returns the first line the server sends,
// without surrounding space. timeout bounds the connection attempt and,
// once connected, the wait for the line; ctx may end the attempt sooner. A
// dropped SYN is never answered, so timeout is how long a test waits before
// it calls the path blocked. The error is the connection's or the read's as
// the net package returns it, or one wrapping ErrNamespace.
func DialLine(ctx context.Context, n ns.NetNS, src netip.Addr, address string, timeout time.Duration) (string, error) {
	d := net.Dialer{Timeout: timeout}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var line string
	var connErr error
	err := n.Do(func(ns.NetNS) error {
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			connErr = err
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, connErr = bufio.NewReader(c).ReadString('\n')
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrNamespace, n.Path(), err)
	}
	return strings.TrimSpace(line), connErr
}
