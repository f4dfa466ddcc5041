// Package cloud is how vpcnet code running on an instance talks to the cloud:
// EC2 through aws-sdk-go-v2 and the instance metadata service at
// 169.254.169.254. It uses only the SDK's ordinary configuration (the default
// credential chain, AWS_ENDPOINT_URL_EC2, the region from instance metadata),
// so the same code runs on EC2 and on the local VPC. It is the one place that
// knows EC2's error codes and retry policy.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// RetryPolicy bounds how hard a caller pushes a cloud that throttles or
// fails. Attempts are spaced by jittered exponential backoff; a call gives
// up after MaxAttempts or at the caller's context deadline, whichever
// comes first.
type RetryPolicy struct {
	MaxAttempts int           // per API call, including the first
	MaxBackoff  time.Duration // longest pause between attempts
}

// DefaultRetry suits an agent that must ride out throttling: EC2's token
// buckets refill within seconds.
var DefaultRetry = RetryPolicy{MaxAttempts: 10, MaxBackoff: 4 * time.Second}

// LoadConfig returns the SDK configuration an instance would use: default
// credential chain (environment, shared files, instance role via IMDS), the
// region from AWS_REGION or else from instance metadata, and a retryer that
// backs off on throttling without a client-side retry quota (which would
// turn a throttling storm into hard failures).
func LoadConfig(ctx context.Context, policy RetryPolicy) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithEC2IMDSRegion(),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = policy.MaxAttempts
				o.MaxBackoff = policy.MaxBackoff
				o.RateLimiter = ratelimit.None
			})
		}),
	)
	if err != nil {
		return aws.Config{}, fmt.Errorf("failed to load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: set AWS_REGION or run where instance metadata answers")
	}
	return cfg, nil
}

// Client is the EC2 and metadata access of one instance.
type Client struct {
	EC2  *ec2.Client
	IMDS *imds.Client
}

// New builds a Client from cfg.
func New(cfg aws.Config) *Client {
	return &Client{
		EC2:  ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.HTTPClient = HTTPClientFor(o.HTTPClient) }),
		IMDS: imds.NewFromConfig(cfg),
	}
}

// APIErrorCode returns the EC2 error code carried by err ("" if none).
func APIErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// EC2 error codes that callers act on.
const (
	CodeAttachmentLimitExceeded = "AttachmentLimitExceeded"
	CodeENINotFound             = "InvalidNetworkInterfaceID.NotFound"
	CodeENIInUse                = "InvalidNetworkInterface.InUse"
	CodeAttachmentNotFound      = "InvalidAttachmentID.NotFound"
	CodeInvalidParameterValue   = "InvalidParameterValue"
	CodeRequestLimitExceeded    = "RequestLimitExceeded"
)

// Identity is what an instance learns about itself from metadata.
type Identity struct {
	InstanceID   string
	InstanceType string
	Region       string
	Zone         string
	PrimaryMAC   string
}

// Identity reads the instance's identity from instance metadata.
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	doc, err := c.IMDS.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("failed to read the instance identity document: %w", err)
	}
	mac, err := c.metadata(ctx, "mac")
	if err != nil {
		return Identity{}, err
	}
	return Identity{
		InstanceID:   doc.InstanceID,
		InstanceType: doc.InstanceType,
		Region:       doc.Region,
		Zone:         doc.AvailabilityZone,
		PrimaryMAC:   mac,
	}, nil
}

func (c *Client) metadata(ctx context.Context, path string) (string, error) {
	out, err := c.IMDS.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("failed to read metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := out.Content.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return strings.TrimSpace(b.String()), nil
}

// ENI is a network interface as vpcnet needs it.
type ENI struct {
	ID           string
	MAC          net.HardwareAddr
	SubnetID     string
	Status       string
	IPv4         []netip.Addr // primary first
	IPv6         []netip.Addr
	Groups       []string
	AttachmentID string
	InstanceID   string
	DeviceIndex  int
	Attached     bool // attachment status "attached"
	Tags         map[string]string
}

func eniFromAPI(n ec2types.NetworkInterface) (ENI, error) {
	e := ENI{
		ID:       aws.ToString(n.NetworkInterfaceId),
		SubnetID: aws.ToString(n.SubnetId),
		Status:   string(n.Status),
		Tags:     map[string]string{},
	}
	mac, err := net.ParseMAC(aws.ToString(n.MacAddress))
	if err != nil {
		return ENI{}, fmt.Errorf("ENI %s has a bad MAC %q: %w", e.ID, aws.ToString(n.MacAddress), err)
	}
	e.MAC = mac
	for _, p := range n.PrivateIpAddresses {
		a, err := netip.ParseAddr(aws.ToString(p.PrivateIpAddress))
		if err != nil {
			return ENI{}, fmt.Errorf("ENI %s has a bad address: %w", e.ID, err)
		}
		if aws.ToBool(p.Primary) {
			e.IPv4 = append([]netip.Addr{a}, e.IPv4...)
		} else {
			e.IPv4 = append(e.IPv4, a)
		}
	}
	for _, p := range n.Ipv6Addresses {
		if a, err := netip.ParseAddr(aws.ToString(p.Ipv6Address)); err == nil {
			e.IPv6 = append(e.IPv6, a)
		}
	}
	for _, g := range n.Groups {
		e.Groups = append(e.Groups, aws.ToString(g.GroupId))
	}
	for _, t := range n.TagSet {
		e.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	if a := n.Attachment; a != nil {
		e.AttachmentID = aws.ToString(a.AttachmentId)
		e.InstanceID = aws.ToString(a.InstanceId)
		e.DeviceIndex = int(aws.ToInt32(a.DeviceIndex))
		e.Attached = a.Status == ec2types.AttachmentStatusAttached
	}
	return e, nil
}

// CreateENIInput says what ENI to create.
type CreateENIInput struct {
	SubnetID    string
	Groups      []string
	Description string
	Tags        map[string]string
}

// CreateENI creates an ENI with one primary private address.
func (c *Client) CreateENI(ctx context.Context, in CreateENIInput) (ENI, error) {
	var tags []ec2types.Tag
	for k, v := range in.Tags {
		tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	req := &ec2.CreateNetworkInterfaceInput{
		SubnetId:    aws.String(in.SubnetID),
		Groups:      in.Groups,
		Description: aws.String(in.Description),
	}
	if len(tags) > 0 {
		req.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: tags}}
	}
	out, err := c.EC2.CreateNetworkInterface(ctx, req)
	if err != nil {
		return ENI{}, fmt.Errorf("failed to create a network interface in %s: %w", in.SubnetID, err)
	}
	return eniFromAPI(*out.NetworkInterface)
}

// DescribeENI returns one ENI; the error has code CodeENINotFound if it is
// gone. It asks with a filter rather than by ID: EC2 charges unfiltered,
// unpaginated describes to a bucket half the size (its documentation
// recommends filters), and a launcher describes its ENI several times per
// task.
func (c *Client) DescribeENI(ctx context.Context, id string) (ENI, error) {
	out, err := c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("network-interface-id"), Values: []string{id}}},
	})
	if err != nil {
		return ENI{}, fmt.Errorf("failed to describe %s: %w", id, err)
	}
	switch len(out.NetworkInterfaces) {
	case 0:
		return ENI{}, fmt.Errorf("failed to describe %s: %w", id, &smithy.GenericAPIError{
			Code: CodeENINotFound, Message: fmt.Sprintf("The networkInterface ID '%s' does not exist", id)})
	case 1:
		return eniFromAPI(out.NetworkInterfaces[0])
	}
	return ENI{}, fmt.Errorf("describe %s returned %d interfaces", id, len(out.NetworkInterfaces))
}

// ENIsByFilter lists ENIs matching EC2 filters (name -> values), following
// pagination.
func (c *Client) ENIsByFilter(ctx context.Context, filters map[string][]string) ([]ENI, error) {
	var fs []ec2types.Filter
	for k, v := range filters {
		fs = append(fs, ec2types.Filter{Name: aws.String(k), Values: v})
	}
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.EC2, &ec2.DescribeNetworkInterfacesInput{Filters: fs, MaxResults: aws.Int32(1000)})
	var enis []ENI
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to list network interfaces: %w", err)
		}
		for _, n := range out.NetworkInterfaces {
			e, err := eniFromAPI(n)
			if err != nil {
				return nil, err
			}
			enis = append(enis, e)
		}
	}
	return enis, nil
}

// AttachENI attaches eniID to the instance at the lowest free device index,
// moving up when a concurrent attach took the index first. It returns the
// attachment ID and the device index used.
func (c *Client) AttachENI(ctx context.Context, eniID, instanceID string) (string, int, error) {
	attached, err := c.ENIsByFilter(ctx, map[string][]string{"attachment.instance-id": {instanceID}})
	if err != nil {
		return "", 0, err
	}
	used := map[int]bool{}
	for _, e := range attached {
		used[e.DeviceIndex] = true
	}
	for idx := 1; idx < 64; idx++ {
		if used[idx] {
			continue
		}
		out, err := c.EC2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
			NetworkInterfaceId: aws.String(eniID),
			InstanceId:         aws.String(instanceID),
			DeviceIndex:        aws.Int32(int32(idx)),
		})
		if err == nil {
			return aws.ToString(out.AttachmentId), idx, nil
		}
		if APIErrorCode(err) == CodeInvalidParameterValue && strings.Contains(strings.ToLower(err.Error()), "device index") {
			used[idx] = true // lost a race for this index; try the next
			continue
		}
		return "", 0, fmt.Errorf("failed to attach %s to %s at device index %d: %w", eniID, instanceID, idx, err)
	}
	return "", 0, fmt.Errorf("failed to attach %s to %s: no free device index", eniID, instanceID)
}

// DetachENI detaches an attachment; an attachment already gone is success.
func (c *Client) DetachENI(ctx context.Context, attachmentID string, force bool) error {
	_, err := c.EC2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(attachmentID), Force: aws.Bool(force)})
	if err != nil && APIErrorCode(err) != CodeAttachmentNotFound {
		return fmt.Errorf("failed to detach %s: %w", attachmentID, err)
	}
	return nil
}

// DeleteENI deletes an ENI once it is detached, waiting for a detach in
// progress to finish; an ENI already gone is success. It waits with
// DescribeNetworkInterfaces, not by retrying the delete: reads draw on
// EC2's larger token bucket, and a launcher that polls with mutating calls
// throttles itself (and every other caller in the account). Polls come
// quickly at first (a local VPC detaches in tens of milliseconds), then
// every half second (EC2 takes seconds).
func (c *Client) DeleteENI(ctx context.Context, eniID string) error {
	delay := 20 * time.Millisecond
	for {
		e, err := c.DescribeENI(ctx, eniID)
		switch {
		case APIErrorCode(err) == CodeENINotFound:
			return nil
		case err != nil:
			return err
		case e.AttachmentID == "":
			_, err := c.EC2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
			switch {
			case err == nil, APIErrorCode(err) == CodeENINotFound:
				return nil
			case APIErrorCode(err) != CodeENIInUse && APIErrorCode(err) != CodeInvalidParameterValue:
				return fmt.Errorf("failed to delete %s: %w", eniID, err)
			}
			// Attached again meanwhile: wait as for any attachment.
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to delete %s (still attached, status %s): %w", eniID, e.Status, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*3/2, 500*time.Millisecond)
	}
}

// Subnet is what a task needs to know about its subnet.
type Subnet struct {
	ID      string
	VPCID   string
	Zone    string
	CIDR    netip.Prefix
	Gateway netip.Addr // the VPC router: the subnet's first address after the network address
	IPv6    netip.Prefix
}

// DescribeSubnet returns a subnet.
func (c *Client) DescribeSubnet(ctx context.Context, id string) (Subnet, error) {
	out, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}})
	if err != nil {
		return Subnet{}, fmt.Errorf("failed to describe subnet %s: %w", id, err)
	}
	if len(out.Subnets) != 1 {
		return Subnet{}, fmt.Errorf("describe subnet %s returned %d subnets", id, len(out.Subnets))
	}
	s := out.Subnets[0]
	cidr, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
	if err != nil {
		return Subnet{}, fmt.Errorf("subnet %s has a bad CIDR: %w", id, err)
	}
	sub := Subnet{
		ID: id, VPCID: aws.ToString(s.VpcId), Zone: aws.ToString(s.AvailabilityZone),
		CIDR: cidr.Masked(), Gateway: cidr.Masked().Addr().Next(),
	}
	for _, a := range s.Ipv6CidrBlockAssociationSet {
		if p, err := netip.ParsePrefix(aws.ToString(a.Ipv6CidrBlock)); err == nil {
			sub.IPv6 = p
		}
	}
	return sub, nil
}

// InstanceENILimit returns the maximum number of ENIs of the instance's type.
func (c *Client) InstanceENILimit(ctx context.Context, instanceType string) (int, error) {
	out, err := c.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceType(instanceType)}})
	if err != nil {
		return 0, fmt.Errorf("failed to describe instance type %s: %w", instanceType, err)
	}
	if len(out.InstanceTypes) != 1 || out.InstanceTypes[0].NetworkInfo == nil {
		return 0, fmt.Errorf("instance type %s: no network information", instanceType)
	}
	return int(aws.ToInt32(out.InstanceTypes[0].NetworkInfo.MaximumNetworkInterfaces)), nil
}
