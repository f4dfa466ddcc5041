package cloud

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// Tags the node agent puts on every ENI it creates, so that an ENI leaked
// by a crash (created, never attached, or detached and not deleted) is
// found and deleted later. EC2 keeps no creation time of an ENI; the tag
// is the only one there is.
const (
	TagNode      = "vpcnet:node"       // the instance ID the ENI was made for
	TagCluster   = "vpcnet:cluster"    // the cluster's name
	TagCreatedAt = "vpcnet:created-at" // RFC 3339, UTC
)

// NodeENITags returns the tags of an ENI the node agent creates for
// instanceID in cluster at time now.
func NodeENITags(instanceID, cluster string, now time.Time) map[string]string {
	return map[string]string{
		TagNode:      instanceID,
		TagCluster:   cluster,
		TagCreatedAt: now.UTC().Format(time.RFC3339),
	}
}

// ENI is a network interface as vpcnet needs it.
type ENI struct {
	ID           string
	MAC          net.HardwareAddr
	SubnetID     string
	VPCID        string
	Zone         string
	Description  string
	Status       string       // "available", "in-use", "attaching", ...
	IPv4         []netip.Addr // primary first
	IPv4Prefixes []netip.Prefix
	IPv6         []netip.Addr
	Groups       []string // security group IDs
	// SourceDestCheck is EC2's source/destination check of the ENI.
	SourceDestCheck bool
	// RequesterManaged ENIs belong to an AWS service, not to us.
	RequesterManaged bool
	Tags             map[string]string

	// The attachment, when there is one.
	AttachmentID        string
	InstanceID          string
	DeviceIndex         int
	NetworkCard         int
	AttachmentStatus    string // "attaching", "attached", "detaching", "detached"
	Attached            bool   // attachment status "attached"
	AttachTime          time.Time
	DeleteOnTermination bool
}

// CreatedAt is when the node agent created the ENI, from its TagCreatedAt
// tag; false when the tag is missing or malformed.
func (e ENI) CreatedAt() (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, e.Tags[TagCreatedAt])
	return t, err == nil
}

func eniFromAPI(n ec2types.NetworkInterface) (ENI, error) {
	e := ENI{
		ID:               aws.ToString(n.NetworkInterfaceId),
		SubnetID:         aws.ToString(n.SubnetId),
		VPCID:            aws.ToString(n.VpcId),
		Zone:             aws.ToString(n.AvailabilityZone),
		Description:      aws.ToString(n.Description),
		Status:           string(n.Status),
		SourceDestCheck:  aws.ToBool(n.SourceDestCheck),
		RequesterManaged: aws.ToBool(n.RequesterManaged),
		Tags:             map[string]string{},
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
	for _, p := range n.Ipv4Prefixes {
		pfx, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix))
		if err != nil {
			return ENI{}, fmt.Errorf("ENI %s has a bad IPv4 prefix: %w", e.ID, err)
		}
		e.IPv4Prefixes = append(e.IPv4Prefixes, pfx)
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
		e.NetworkCard = int(aws.ToInt32(a.NetworkCardIndex))
		e.AttachmentStatus = string(a.Status)
		e.Attached = a.Status == ec2types.AttachmentStatusAttached
		e.AttachTime = aws.ToTime(a.AttachTime)
		e.DeleteOnTermination = aws.ToBool(a.DeleteOnTermination)
	}
	return e, nil
}

// CreateENIInput says what ENI to create.
type CreateENIInput struct {
	SubnetID    string
	Groups      []string // none: the VPC's default group
	Description string
	Tags        map[string]string // e.g. NodeENITags
	// SecondaryCount and PrefixCount ask for secondary addresses or /28
	// prefixes in the same call (at most one of them): a node agent's new
	// ENI arrives ready to carry pods, one EC2 round trip sooner.
	SecondaryCount int
	PrefixCount    int
}

// CreateENI creates an ENI with one primary private address, its tags set
// in the same call (an ENI is never untagged, even if the caller dies
// right after).
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
	if in.SecondaryCount > 0 {
		req.SecondaryPrivateIpAddressCount = aws.Int32(int32(in.SecondaryCount))
	}
	if in.PrefixCount > 0 {
		req.Ipv4PrefixCount = aws.Int32(int32(in.PrefixCount))
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
func (c *Client) ENIsByFilter(ctx context.Context, filter map[string][]string) ([]ENI, error) {
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.EC2, &ec2.DescribeNetworkInterfacesInput{
		Filters: filters(filter), MaxResults: aws.Int32(c.pageSize)})
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

// InstanceENIs lists the ENIs attached (or attaching, or detaching) to an
// instance, the primary included.
func (c *Client) InstanceENIs(ctx context.Context, instanceID string) ([]ENI, error) {
	enis, err := c.ENIsByFilter(ctx, map[string][]string{"attachment.instance-id": {instanceID}})
	if err != nil {
		return nil, fmt.Errorf("ENIs of %s: %w", instanceID, err)
	}
	return enis, nil
}

// LeakedENIs lists the ENIs in a VPC that a node agent created (tagged
// TagNode) and that are attached to nothing. Which of them to delete (the
// node is gone, the ENI is old enough not to be one being attached right
// now) is the caller's decision, from their tags.
func (c *Client) LeakedENIs(ctx context.Context, vpcID string) ([]ENI, error) {
	enis, err := c.ENIsByFilter(ctx, map[string][]string{
		"vpc-id":  {vpcID},
		"status":  {string(ec2types.NetworkInterfaceStatusAvailable)},
		"tag-key": {TagNode},
	})
	if err != nil {
		return nil, fmt.Errorf("unattached vpcnet ENIs in %s: %w", vpcID, err)
	}
	return enis, nil
}

// AttachENI attaches eniID to the instance at the lowest free device index,
// moving up when a concurrent attach took the index first. It returns the
// attachment ID and the device index used.
func (c *Client) AttachENI(ctx context.Context, eniID, instanceID string) (string, int, error) {
	attached, err := c.InstanceENIs(ctx, instanceID)
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
		att, err := c.AttachENIAt(ctx, eniID, instanceID, idx)
		if err == nil {
			return att, idx, nil
		}
		if deviceIndexTaken(err) {
			used[idx] = true // lost a race for this index; try the next
			continue
		}
		return "", 0, err
	}
	return "", 0, fmt.Errorf("failed to attach %s to %s: no free device index", eniID, instanceID)
}

// AttachENIAt attaches eniID to the instance at deviceIndex (network card
// 0) and returns the attachment ID. The attachment is "attaching" until
// the device appears on the instance.
func (c *Client) AttachENIAt(ctx context.Context, eniID, instanceID string, deviceIndex int) (string, error) {
	out, err := c.EC2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(eniID),
		InstanceId:         aws.String(instanceID),
		DeviceIndex:        aws.Int32(int32(deviceIndex)),
	})
	if err != nil {
		return "", fmt.Errorf("failed to attach %s to %s at device index %d: %w", eniID, instanceID, deviceIndex, err)
	}
	return aws.ToString(out.AttachmentId), nil
}

// SetDeleteOnTermination sets whether EC2 deletes the ENI when its
// instance terminates. EC2 keeps the flag on the attachment, so the ENI
// must be attached.
func (c *Client) SetDeleteOnTermination(ctx context.Context, eniID, attachmentID string, on bool) error {
	_, err := c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(eniID),
		Attachment: &ec2types.NetworkInterfaceAttachmentChanges{
			AttachmentId:        aws.String(attachmentID),
			DeleteOnTermination: aws.Bool(on),
		},
	})
	if err != nil {
		return fmt.Errorf("failed to set delete-on-termination %v on %s (attachment %s): %w", on, eniID, attachmentID, err)
	}
	return nil
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
