package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// cloudEC2 is EC2 through internal/cloud (the AWS SDK).
type cloudEC2 struct {
	c *cloud.Client
	m *metrics

	// subnetCIDRs caches DescribeSubnets: a subnet's CIDR never changes,
	// and every read of the node's ENIs needs their subnets'.
	mu          sync.Mutex
	subnetCIDRs map[string]netip.Prefix
}

// subnetCIDR is the subnet's IPv4 CIDR, asked of EC2 once per subnet.
func (c *cloudEC2) subnetCIDR(ctx context.Context, id string) (netip.Prefix, error) {
	c.mu.Lock()
	cidr, ok := c.subnetCIDRs[id]
	c.mu.Unlock()
	if ok {
		return cidr, nil
	}
	err := c.call("DescribeSubnets", func() error {
		s, err := c.c.DescribeSubnet(ctx, id)
		cidr = s.CIDR
		return err
	})
	if err != nil {
		return netip.Prefix{}, err
	}
	c.mu.Lock()
	if c.subnetCIDRs == nil {
		c.subnetCIDRs = map[string]netip.Prefix{}
	}
	c.subnetCIDRs[id] = cidr
	c.mu.Unlock()
	return cidr, nil
}

var _ EC2 = (*cloudEC2)(nil)

// call runs one EC2 action, counting it and its errors by action and code.
func (c *cloudEC2) call(action string, f func() error) error {
	start := time.Now()
	err := f()
	c.m.ec2Latency.WithLabelValues(action).Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.ec2Calls.WithLabelValues(action, "error").Inc()
		code := cloud.APIErrorCode(err)
		if code == "" {
			code = "other"
		}
		c.m.ec2Errors.WithLabelValues(action, code).Inc()
		return err
	}
	c.m.ec2Calls.WithLabelValues(action, "ok").Inc()
	return nil
}

func eniOf(e cloud.ENI, instanceID string) *ENI {
	out := &ENI{
		ID: e.ID, MAC: e.MAC, MACString: e.MAC.String(), DeviceIndex: e.DeviceIndex, AttachmentID: e.AttachmentID,
		Primary: e.Attached && e.DeviceIndex == 0, SubnetID: e.SubnetID, Groups: e.Groups,
		Prefixes: e.IPv4Prefixes, Attached: e.Attached, AttachStatus: e.AttachmentStatus,
		DeleteOnTermination: e.DeleteOnTermination,
		Ours:                e.Tags[TagNode] == instanceID && instanceID != "",
		Unmanaged:           e.Tags[TagNoManage] == "true",
	}
	if len(e.IPv4) > 0 {
		out.PrimaryIP = e.IPv4[0]
		out.Secondary = append([]netip.Addr(nil), e.IPv4[1:]...)
	}
	if t, ok := e.CreatedAt(); ok {
		out.CreatedAt = t
	} else {
		out.CreatedAt = e.AttachTime
	}
	return out
}

func (c *cloudEC2) NodeENIs(ctx context.Context, instanceID string) ([]*ENI, error) {
	var enis []cloud.ENI
	err := c.call("DescribeNetworkInterfaces", func() (err error) {
		enis, err = c.c.InstanceENIs(ctx, instanceID)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []*ENI
	for _, e := range enis {
		n := eniOf(e, instanceID)
		if n.SubnetCIDR, err = c.subnetCIDR(ctx, e.SubnetID); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *cloudEC2) CreateENI(ctx context.Context, in CreateENI) (*ENI, error) {
	var e cloud.ENI
	err := c.call("CreateNetworkInterface", func() (err error) {
		e, err = c.c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: in.SubnetID, Groups: in.Groups,
			Description: in.Description, Tags: in.Tags, SecondaryCount: in.SecondaryCount, PrefixCount: in.PrefixCount})
		return err
	})
	if err != nil {
		return nil, err
	}
	n := eniOf(e, in.Tags[TagNode])
	n.SubnetCIDR, err = c.subnetCIDR(ctx, e.SubnetID)
	return n, err
}

func (c *cloudEC2) AttachENI(ctx context.Context, eniID, instanceID string, deviceIndex int) (string, error) {
	var att string
	err := c.call("AttachNetworkInterface", func() (err error) {
		att, err = c.c.AttachENIAt(ctx, eniID, instanceID, deviceIndex)
		return err
	})
	if err != nil {
		return "", err
	}
	// DeleteOnTermination: the instance's end takes the ENI along, so a
	// node that is simply terminated leaks nothing. The ENI is attached
	// whether or not this succeeds: the attachment ID comes back either way.
	return att, c.SetDeleteOnTermination(ctx, eniID, att)
}

func (c *cloudEC2) SetDeleteOnTermination(ctx context.Context, eniID, attachmentID string) error {
	return c.call("ModifyNetworkInterfaceAttribute", func() error {
		return c.c.SetDeleteOnTermination(ctx, eniID, attachmentID, true)
	})
}

func (c *cloudEC2) AssignIPv4(ctx context.Context, eniID string, count int) ([]netip.Addr, error) {
	var got cloud.Assigned
	err := c.call("AssignPrivateIpAddresses", func() (err error) {
		got, err = c.c.AssignPrivateIPAddresses(ctx, eniID, cloud.AddressRequest{Count: count})
		return err
	})
	return got.Addresses, err
}

func (c *cloudEC2) AssignPrefixes(ctx context.Context, eniID string, count int) ([]netip.Prefix, error) {
	var got cloud.Assigned
	err := c.call("AssignPrivateIpAddresses", func() (err error) {
		got, err = c.c.AssignPrivateIPAddresses(ctx, eniID, cloud.AddressRequest{PrefixCount: count})
		return err
	})
	return got.Prefixes, err
}

func (c *cloudEC2) UnassignIPv4(ctx context.Context, eniID string, addrs []netip.Addr) error {
	return c.call("UnassignPrivateIpAddresses", func() error {
		return c.c.UnassignPrivateIPAddresses(ctx, eniID, addrs, nil)
	})
}

func (c *cloudEC2) UnassignPrefixes(ctx context.Context, eniID string, prefixes []netip.Prefix) error {
	return c.call("UnassignPrivateIpAddresses", func() error {
		return c.c.UnassignPrivateIPAddresses(ctx, eniID, nil, prefixes)
	})
}

func (c *cloudEC2) DetachAndDeleteENI(ctx context.Context, eniID, attachmentID string) error {
	if attachmentID != "" {
		if err := c.call("DetachNetworkInterface", func() error { return c.c.DetachENI(ctx, attachmentID, false) }); err != nil {
			return err
		}
	}
	return c.DeleteENI(ctx, eniID)
}

func (c *cloudEC2) DeleteENI(ctx context.Context, eniID string) error {
	return c.call("DeleteNetworkInterface", func() error { return c.c.DeleteENI(ctx, eniID) })
}

func (c *cloudEC2) LeakedENIs(ctx context.Context, vpcID, instanceID string) ([]*ENI, error) {
	var enis []cloud.ENI
	err := c.call("DescribeNetworkInterfaces", func() (err error) {
		enis, err = c.c.LeakedENIs(ctx, vpcID)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []*ENI
	for _, e := range enis {
		if e.Tags[TagNode] != instanceID || e.Tags[TagNoManage] == "true" {
			continue
		}
		n := eniOf(e, instanceID)
		if _, ok := e.CreatedAt(); !ok {
			continue // no creation time to age it by: not ours to judge
		}
		out = append(out, n)
	}
	return out, nil
}

// Start finds out what node it runs on (instance metadata, EC2's instance
// type limits), builds the agent and runs it until ctx ends.
func Start(ctx context.Context, cfg Config, log *slog.Logger) error {
	awsCfg, err := cloud.LoadConfig(ctx, cloud.AgentRetryPolicy)
	if err != nil {
		return err
	}
	c := cloud.New(awsCfg)
	var id Identity
	if err := startupRetry(ctx, log, "read the node's identity", func() (err error) {
		id, err = discover(ctx, c)
		return err
	}); err != nil {
		return err
	}
	var il cloud.InstanceLimits
	if err := startupRetry(ctx, log, "read the instance type's limits", func() (err error) {
		il, err = c.InstanceLimits(ctx, id.InstanceType)
		if err != nil {
			return fmt.Errorf("limits of instance type %s: %w", id.InstanceType, err)
		}
		return nil
	}); err != nil {
		return err
	}
	limits, err := pool.NewLimits(pool.InstanceType{Name: il.Type, ENIs: il.ENIs, IPv4PerENI: il.IPv4PerENI,
		PrefixDelegation: il.PrefixDelegation}, cfg.Pool)
	if err != nil {
		return err
	}
	log.Info("starting", "instance", id.InstanceID, "type", id.InstanceType, "zone", id.Zone,
		"primaryIP", id.PrimaryIP, "enis", limits.ENIs, "slotsPerENI", limits.SlotsPerENI, "maxPods", limits.MaxPods)
	ec := &cloudEC2{c: c}
	a, err := New(cfg, log, ec, &KernelNetwork{}, id, limits)
	if err != nil {
		return err
	}
	ec.m = a.m
	if a.kube, err = newKube(cfg.Kube, log); err != nil {
		return err
	}
	if a.kube != nil {
		log.Info("on Kubernetes", "node", cfg.Kube.NodeName, "annotatePodIP", cfg.Kube.AnnotatePodIP)
	}
	return a.Run(ctx)
}

// startupRetry runs one of Start's calls until it succeeds, retrying what
// passes (throttling, EC2 server errors, an endpoint not answering yet)
// with the reconciler's backoff, so that an agent started during an EC2
// brown-out waits for it instead of exiting and being restarted into the
// same throttled bucket. Refusals (bad credentials, an unknown instance
// type) fail at once; so does ctx ending.
func startupRetry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	var cur time.Duration
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		switch cloud.Classify(err) {
		case cloud.KindThrottled, cloud.KindServerError:
		case cloud.KindOther:
			var ne net.Error
			if !errors.As(err, &ne) {
				return err // not the network: a refusal or a fault of the node
			}
		default:
			return err
		}
		wait := throttleBackoff(&cur)
		log.Warn("starting: retrying", "step", what, "attempt", attempt, "in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// discover reads the node's identity: instance metadata for the instance
// and its primary ENI (subnet, groups, VPC CIDRs), the kernel for the
// primary ENI's device name.
func discover(ctx context.Context, c *cloud.Client) (Identity, error) {
	ci, err := c.Identity(ctx)
	if err != nil {
		return Identity{}, err
	}
	im, err := c.InterfaceMetadata(ctx, ci.PrimaryMAC)
	if err != nil {
		return Identity{}, fmt.Errorf("metadata of the primary ENI %s: %w", ci.PrimaryMAC, err)
	}
	id := Identity{
		InstanceID: ci.InstanceID, InstanceType: ci.InstanceType, Region: ci.Region, Zone: ci.Zone,
		VPCID: im.VPCID, VPCCIDRs: im.VPCCIDRs, PrimaryENI: im.InterfaceID, PrimaryMAC: ci.PrimaryMAC,
		PrimaryIP: ci.PrivateIPv4, SubnetID: im.SubnetID, SubnetCIDR: im.SubnetCIDR, Groups: im.SecurityGroupIDs,
	}
	if !id.PrimaryIP.IsValid() && len(im.LocalIPv4s) > 0 {
		id.PrimaryIP = im.LocalIPv4s[0]
	}
	link, err := netops.LinkByMAC(im.MAC)
	if err != nil {
		return Identity{}, fmt.Errorf("find the primary ENI's device (MAC %s): %w", im.MAC, err)
	}
	id.PrimaryIface = link.Attrs().Name
	return id, nil
}

// LoadPoolConfig fills cfg.Pool from the config file (if any) and the
// environment, which overrides it, and the agent's own settings that have
// an environment variable: VPCNET_LEAKED_ENI_INTERVAL (how often the
// leaked-ENI sweep runs, a Go duration or whole seconds; default 1m) and
// the Kubernetes side's (LoadKubeConfig).
func LoadPoolConfig(cfg *Config, file string) error {
	var data []byte
	if file != "" {
		var err error
		if data, err = os.ReadFile(file); err != nil {
			return fmt.Errorf("read the config file: %w", err)
		}
	}
	pc, err := pool.LoadConfig(data, os.LookupEnv)
	if err != nil {
		return err
	}
	cfg.Pool = pc
	if v := strings.TrimSpace(os.Getenv("VPCNET_LEAKED_ENI_INTERVAL")); v != "" {
		d, err := parseInterval(v)
		if err != nil {
			return &pool.ConfigError{Name: "VPCNET_LEAKED_ENI_INTERVAL", Problem: err.Error()}
		}
		cfg.LeakedENIInterval = d
	}
	return LoadKubeConfig(cfg)
}

// parseInterval reads whole seconds ("60") or a Go duration ("1m"), above 0,
// as package pool reads its durations.
func parseInterval(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, nerr := strconv.Atoi(s); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%q is neither whole seconds (60) nor a duration (1m)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be above 0", s)
	}
	return d, nil
}

// Cleanup removes the node networking the agent made, in the current
// namespace.
func Cleanup() error {
	return (&KernelNetwork{}).Cleanup()
}
