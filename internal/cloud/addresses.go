package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// PrefixBits is the length of the IPv4 prefixes EC2 delegates to an ENI.
const PrefixBits = 28

// AddressRequest asks for secondary IPv4 on an ENI: exactly one of a
// number of addresses, given addresses, a number of /28 prefixes, given
// prefixes (EC2 takes one kind per call). Counted requests let EC2 pick,
// which is what a pool wants: EC2 knows what is free in the subnet.
type AddressRequest struct {
	Count       int
	Addresses   []netip.Addr
	PrefixCount int
	Prefixes    []netip.Prefix
}

// Assigned is what an assign call added to the ENI.
type Assigned struct {
	Addresses []netip.Addr
	Prefixes  []netip.Prefix
}

// check refuses a request EC2 would refuse for its shape, naming the field,
// before anything is sent.
func (r AddressRequest) check() error {
	var set []string
	switch {
	case r.Count < 0:
		return fmt.Errorf("Count %d: must not be negative", r.Count)
	case r.PrefixCount < 0:
		return fmt.Errorf("PrefixCount %d: must not be negative", r.PrefixCount)
	}
	if r.Count > 0 {
		set = append(set, "Count")
	}
	if len(r.Addresses) > 0 {
		set = append(set, "Addresses")
	}
	if r.PrefixCount > 0 {
		set = append(set, "PrefixCount")
	}
	if len(r.Prefixes) > 0 {
		set = append(set, "Prefixes")
	}
	switch len(set) {
	case 0:
		return errors.New("nothing to assign: set one of Count, Addresses, PrefixCount, Prefixes")
	case 1:
	default:
		return fmt.Errorf("%s: EC2 takes only one of them per call", strings.Join(set, " and "))
	}
	return checkAddresses(r.Addresses, r.Prefixes)
}

func checkAddresses(addrs []netip.Addr, prefixes []netip.Prefix) error {
	for i, a := range addrs {
		if !a.Is4() {
			return fmt.Errorf("Addresses[%d] %v: not an IPv4 address", i, a)
		}
	}
	for i, p := range prefixes {
		if !p.Addr().Is4() || p.Bits() != PrefixBits || p.Masked() != p {
			return fmt.Errorf("Prefixes[%d] %v: not an aligned IPv4 /%d", i, p, PrefixBits)
		}
	}
	return nil
}

// AssignPrivateIPAddresses adds secondary IPv4 addresses or /28 prefixes
// to an ENI and returns what EC2 assigned. On an attached ENI the instance
// type's limit per ENI counts the primary address, each secondary one and
// each prefix (KindAddressLimit beyond it).
func (c *Client) AssignPrivateIPAddresses(ctx context.Context, eniID string, req AddressRequest) (Assigned, error) {
	if err := req.check(); err != nil {
		return Assigned{}, fmt.Errorf("assign to %s: %w", eniID, err)
	}
	in := &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID)}
	if req.Count > 0 {
		in.SecondaryPrivateIpAddressCount = aws.Int32(int32(req.Count))
	}
	if req.PrefixCount > 0 {
		in.Ipv4PrefixCount = aws.Int32(int32(req.PrefixCount))
	}
	for _, a := range req.Addresses {
		in.PrivateIpAddresses = append(in.PrivateIpAddresses, a.String())
	}
	for _, p := range req.Prefixes {
		in.Ipv4Prefixes = append(in.Ipv4Prefixes, p.String())
	}
	out, err := c.EC2.AssignPrivateIpAddresses(ctx, in)
	if err != nil {
		return Assigned{}, fmt.Errorf("failed to assign %s to %s: %w", req, eniID, err)
	}
	var got Assigned
	for _, a := range out.AssignedPrivateIpAddresses {
		addr, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress))
		if err != nil {
			return Assigned{}, fmt.Errorf("EC2 assigned a bad address to %s: %w", eniID, err)
		}
		got.Addresses = append(got.Addresses, addr)
	}
	for _, p := range out.AssignedIpv4Prefixes {
		pfx, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix))
		if err != nil {
			return Assigned{}, fmt.Errorf("EC2 assigned a bad prefix to %s: %w", eniID, err)
		}
		got.Prefixes = append(got.Prefixes, pfx)
	}
	return got, nil
}

// UnassignPrivateIPAddresses removes secondary IPv4 addresses and /28
// prefixes from an ENI. EC2 refuses the whole call (InvalidParameterValue)
// if one of them is not on the ENI, and the primary address cannot go.
func (c *Client) UnassignPrivateIPAddresses(ctx context.Context, eniID string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	if len(addrs)+len(prefixes) == 0 {
		return fmt.Errorf("unassign from %s: nothing to unassign: give Addresses or Prefixes", eniID)
	}
	if err := checkAddresses(addrs, prefixes); err != nil {
		return fmt.Errorf("unassign from %s: %w", eniID, err)
	}
	in := &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID)}
	for _, a := range addrs {
		in.PrivateIpAddresses = append(in.PrivateIpAddresses, a.String())
	}
	for _, p := range prefixes {
		in.Ipv4Prefixes = append(in.Ipv4Prefixes, p.String())
	}
	if _, err := c.EC2.UnassignPrivateIpAddresses(ctx, in); err != nil {
		return fmt.Errorf("failed to unassign %v %v from %s: %w", addrs, prefixes, eniID, err)
	}
	return nil
}

// String says what the request asks for, for messages.
func (r AddressRequest) String() string {
	switch {
	case r.Count > 0:
		return fmt.Sprintf("%d addresses", r.Count)
	case r.PrefixCount > 0:
		return fmt.Sprintf("%d /%d prefixes", r.PrefixCount, PrefixBits)
	case len(r.Prefixes) > 0:
		return fmt.Sprint(r.Prefixes)
	}
	return fmt.Sprint(r.Addresses)
}
