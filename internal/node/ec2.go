package node

import (
	"context"
	"github.com/vpcnet/vpcnet/internal/cloud"
	"net/netip"
)

// EC2 is the agent's seam to the cloud: the calls the reconciler makes, in
// the agent's own types. cloudEC2 implements it with internal/cloud (the
// AWS SDK); on the local VPC it is the same code talking to the emulator.
type EC2 interface {
	// NodeENIs lists the ENIs attached to the instance, as EC2 sees them.
	NodeENIs(ctx context.Context, instanceID string) ([]*ENI, error)
	// CreateENI creates a tagged ENI in the subnet with the groups.
	CreateENI(ctx context.Context, in CreateENI) (*ENI, error)
	// AttachENI attaches the ENI at the device index and marks it
	// DeleteOnTermination, so the instance's end takes it along. A
	// non-empty attachment ID with an error means EC2 attached the ENI but
	// the flag could not be set.
	AttachENI(ctx context.Context, eniID, instanceID string, deviceIndex int) (attachmentID string, err error)
	// SetDeleteOnTermination marks an attached ENI DeleteOnTermination.
	SetDeleteOnTermination(ctx context.Context, eniID, attachmentID string) error
	// AssignIPv4 asks for count more secondary addresses on the ENI and
	// returns the ones EC2 assigned.
	AssignIPv4(ctx context.Context, eniID string, count int) ([]netip.Addr, error)
	// AssignPrefixes asks for count /28 prefixes on the ENI.
	AssignPrefixes(ctx context.Context, eniID string, count int) ([]netip.Prefix, error)
	// UnassignIPv4 gives secondary addresses back.
	UnassignIPv4(ctx context.Context, eniID string, addrs []netip.Addr) error
	// UnassignPrefixes gives prefixes back.
	UnassignPrefixes(ctx context.Context, eniID string, prefixes []netip.Prefix) error
	// DetachAndDeleteENI detaches (if attached) and deletes the ENI.
	DetachAndDeleteENI(ctx context.Context, eniID, attachmentID string) error
	// LeakedENIs lists available (unattached) ENIs in the VPC tagged as
	// created for the instance.
	LeakedENIs(ctx context.Context, vpcID, instanceID string) ([]*ENI, error)
	// DeleteENI deletes an available ENI.
	DeleteENI(ctx context.Context, eniID string) error
}

// CreateENI says what ENI the agent wants.
type CreateENI struct {
	SubnetID    string
	Groups      []string
	Description string
	Tags        map[string]string
	// SecondaryCount and PrefixCount ask EC2 for addresses or /28
	// prefixes in the same call, saving the new ENI one round trip.
	SecondaryCount int
	PrefixCount    int
}

// Tags the agent puts on the ENIs it creates.
const (
	TagNode      = "vpcnet:node"       // instance ID
	TagCluster   = "vpcnet:cluster"    // cluster name
	TagCreatedAt = "vpcnet:created-at" // RFC3339
	TagNoManage  = "vpcnet:no-manage"  // "true": never touched
)

// errorCode is the EC2 error code of err ("" if it is not an EC2 error).
func errorCode(err error) string { return cloud.APIErrorCode(err) }
