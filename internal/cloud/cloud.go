// Package cloud is how vpcnet code running on an instance talks to the cloud:
// EC2 through aws-sdk-go-v2 and the instance metadata service at
// 169.254.169.254. It uses only the SDK's ordinary configuration (the default
// credential chain, AWS_ENDPOINT_URL_EC2, the region from instance metadata),
// so the same code runs on EC2 and on the local VPC. It is the one place that
// knows EC2's error codes (codes.go) and retry policies (retry.go).
package cloud

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// LoadConfig returns the SDK configuration an instance would use: default
// credential chain (environment, shared files, instance role via IMDS), the
// region from AWS_REGION or else from instance metadata, and a retryer that
// applies policy.
func LoadConfig(ctx context.Context, policy RetryPolicy) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithEC2IMDSRegion(),
		config.WithRetryer(policy.NewRetryer),
	)
	if err != nil {
		return aws.Config{}, fmt.Errorf("failed to load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: set AWS_REGION or run where instance metadata answers")
	}
	return cfg, nil
}

// Client is the EC2 and metadata access of one instance. It is safe for
// concurrent use.
type Client struct {
	EC2  *ec2.Client
	IMDS *imds.Client

	// pageSize is MaxResults of the listings (EC2 allows 5 to 1000).
	pageSize int32

	limitsMu sync.Mutex
	limits   map[string]*limitsEntry // by instance type
}

// New builds a Client from cfg. Its EC2 calls note their failed attempts
// in the APIErrors of their context (WithAPIErrors).
func New(cfg aws.Config) *Client {
	return &Client{
		EC2: ec2.NewFromConfig(cfg, func(o *ec2.Options) {
			o.HTTPClient = HTTPClientFor(o.HTTPClient)
			o.APIOptions = append(slices.Clip(o.APIOptions), recordAttempts)
		}),
		IMDS:     imds.NewFromConfig(cfg),
		pageSize: 1000,
		limits:   map[string]*limitsEntry{},
	}
}

// Identity is what an instance learns about itself from metadata.
type Identity struct {
	InstanceID   string
	InstanceType string
	Region       string
	Zone         string
	PrimaryMAC   string
	// PrivateIPv4 is the primary ENI's primary address (local-ipv4).
	PrivateIPv4 netip.Addr
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
	id := Identity{
		InstanceID:   doc.InstanceID,
		InstanceType: doc.InstanceType,
		Region:       doc.Region,
		Zone:         doc.AvailabilityZone,
		PrimaryMAC:   mac,
	}
	if doc.PrivateIP != "" {
		if id.PrivateIPv4, err = netip.ParseAddr(doc.PrivateIP); err != nil {
			return Identity{}, fmt.Errorf("the instance identity document has a bad privateIp %q: %w", doc.PrivateIP, err)
		}
	}
	return id, nil
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

// filters turns name -> values into EC2 filters, in name order (a stable
// request is easier to read in a log).
func filters(m map[string][]string) []ec2types.Filter {
	var fs []ec2types.Filter
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fs = append(fs, ec2types.Filter{Name: aws.String(k), Values: m[k]})
	}
	return fs
}
