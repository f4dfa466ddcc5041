package cloud

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// InstanceLimits are the networking limits of an instance type, as
// DescribeInstanceTypes reports them.
type InstanceLimits struct {
	Type string
	// ENIs is the most ENIs an instance of the type takes, the primary
	// included, over all its network cards.
	ENIs int
	// IPv4PerENI counts the primary address, each secondary address and
	// each delegated /28 prefix as one.
	IPv4PerENI int
	IPv6PerENI int
	IPv6       bool // IPv6 supported
	Hypervisor string
	// PrefixDelegation: /28 prefixes can be assigned to the type's ENIs.
	// EC2 does not report it; it is supported on Nitro types, which EC2
	// does report.
	PrefixDelegation bool
	// NetworkCards lists the cards and the ENIs each takes; most types
	// have one.
	NetworkCards       []NetworkCard
	DefaultNetworkCard int
}

// NetworkCard is one network card of an instance type.
type NetworkCard struct {
	Index int
	ENIs  int
}

type limitsEntry struct {
	done   chan struct{} // closed when the call has returned
	limits InstanceLimits
	err    error
}

// InstanceLimits returns the networking limits of an instance type. The
// first call for a type asks EC2 once (concurrent callers wait for it);
// later calls are answered from the client's cache. A failure is not
// cached.
func (c *Client) InstanceLimits(ctx context.Context, instanceType string) (InstanceLimits, error) {
	c.limitsMu.Lock()
	e, ok := c.limits[instanceType]
	if !ok {
		e = &limitsEntry{done: make(chan struct{})}
		c.limits[instanceType] = e
	}
	c.limitsMu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			return InstanceLimits{}, fmt.Errorf("waiting for the limits of instance type %s: %w", instanceType, ctx.Err())
		}
		if e.err == nil {
			return e.limits, nil
		}
		// The call we waited for failed: ours may not (a later caller
		// created a new entry, or we do).
		return c.InstanceLimits(ctx, instanceType)
	}
	e.limits, e.err = c.describeInstanceType(ctx, instanceType)
	if e.err != nil {
		c.limitsMu.Lock()
		if c.limits[instanceType] == e {
			delete(c.limits, instanceType)
		}
		c.limitsMu.Unlock()
	}
	close(e.done)
	return e.limits, e.err
}

func (c *Client) describeInstanceType(ctx context.Context, instanceType string) (InstanceLimits, error) {
	out, err := c.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceType(instanceType)}})
	if err != nil {
		return InstanceLimits{}, fmt.Errorf("failed to describe instance type %s: %w", instanceType, err)
	}
	if len(out.InstanceTypes) != 1 || out.InstanceTypes[0].NetworkInfo == nil {
		return InstanceLimits{}, fmt.Errorf("instance type %s: no network information", instanceType)
	}
	return limitsFromAPI(out.InstanceTypes[0]), nil
}

func limitsFromAPI(t ec2types.InstanceTypeInfo) InstanceLimits {
	n := t.NetworkInfo
	l := InstanceLimits{
		Type:               string(t.InstanceType),
		ENIs:               int(aws.ToInt32(n.MaximumNetworkInterfaces)),
		IPv4PerENI:         int(aws.ToInt32(n.Ipv4AddressesPerInterface)),
		IPv6PerENI:         int(aws.ToInt32(n.Ipv6AddressesPerInterface)),
		IPv6:               aws.ToBool(n.Ipv6Supported),
		Hypervisor:         string(t.Hypervisor),
		PrefixDelegation:   t.Hypervisor == ec2types.InstanceTypeHypervisorNitro,
		DefaultNetworkCard: int(aws.ToInt32(n.DefaultNetworkCardIndex)),
	}
	for _, card := range n.NetworkCards {
		l.NetworkCards = append(l.NetworkCards, NetworkCard{
			Index: int(aws.ToInt32(card.NetworkCardIndex)),
			ENIs:  int(aws.ToInt32(card.MaximumNetworkInterfaces)),
		})
	}
	return l
}

// InstanceENILimit returns the maximum number of ENIs of the instance's type.
func (c *Client) InstanceENILimit(ctx context.Context, instanceType string) (int, error) {
	l, err := c.InstanceLimits(ctx, instanceType)
	if err != nil {
		return 0, err
	}
	return l.ENIs, nil
}
