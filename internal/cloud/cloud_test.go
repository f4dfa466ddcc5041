package cloud_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// TestENILifecycle drives the EC2 calls the task launcher makes, through
// the real SDK against a local VPC, and checks what EC2 and the instance
// see at each step.
func TestENILifecycle(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1", "--instance-type", "t3.medium")
	c := cloud.New(aws.Config{
		Region:       v.Region,
		BaseEndpoint: aws.String(v.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(v.AccessKeyID, v.SecretAccessKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst := v.Instances[0]

	sub, err := c.DescribeSubnet(ctx, inst.SubnetID)
	if err != nil {
		t.Fatal(err)
	}
	if sub.CIDR.String() != v.Subnets[0].CIDR || sub.Gateway != sub.CIDR.Addr().Next() {
		t.Fatalf("subnet %+v: want CIDR %s and gateway at network+1", sub, v.Subnets[0].CIDR)
	}
	limit, err := c.InstanceENILimit(ctx, "t3.medium")
	if err != nil || limit != 3 {
		t.Fatalf("InstanceENILimit(t3.medium) = %d, %v; want 3", limit, err)
	}

	tags := map[string]string{"vpcnet:task-id": "test1"}
	eni, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: sub.ID, Description: "test", Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	if len(eni.IPv4) != 1 || !sub.CIDR.Contains(eni.IPv4[0]) || eni.Status != "available" {
		t.Fatalf("new ENI %+v: want one address in %s, available", eni, sub.CIDR)
	}
	found, err := c.ENIsByFilter(ctx, map[string][]string{"tag:vpcnet:task-id": {"test1"}})
	if err != nil || len(found) != 1 || found[0].ID != eni.ID {
		t.Fatalf("ENIsByFilter(tag) = %+v, %v; want just %s", found, err, eni.ID)
	}

	att, idx, err := c.AttachENI(ctx, eni.ID, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 1 {
		t.Errorf("first extra ENI attached at device index %d, want 1", idx)
	}
	link, err := netops.WaitForLink(ctx, netops.NamedNSPath(inst.Namespace), eni.MAC)
	if err != nil {
		t.Fatalf("the attached ENI's device never appeared on the instance: %v", err)
	}
	if link.Attrs().Name != "eth1" {
		t.Errorf("device of device index 1 is %q, want eth1", link.Attrs().Name)
	}

	// t3.medium takes 3 ENIs: the primary, this one, and one more.
	second, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: sub.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, idx2, err := c.AttachENI(ctx, second.ID, inst.ID); err != nil || idx2 != 2 {
		t.Fatalf("second attach: index %d, %v; want index 2", idx2, err)
	}
	third, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: sub.ID})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.AttachENI(ctx, third.ID, inst.ID)
	if code := cloud.APIErrorCode(err); code != cloud.CodeAttachmentLimitExceeded {
		t.Fatalf("fourth ENI on a t3.medium: error %v (code %q), want %s", err, code, cloud.CodeAttachmentLimitExceeded)
	}

	if err := c.DetachENI(ctx, att, false); err != nil {
		t.Fatal(err)
	}
	if err := c.DetachENI(ctx, att, false); err != nil {
		t.Fatalf("detaching twice must succeed: %v", err)
	}
	if err := c.DeleteENI(ctx, eni.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteENI(ctx, eni.ID); err != nil {
		t.Fatalf("deleting twice must succeed: %v", err)
	}
	if _, err := c.DescribeENI(ctx, eni.ID); cloud.APIErrorCode(err) != cloud.CodeENINotFound {
		t.Fatalf("describe of a deleted ENI: %v, want %s", err, cloud.CodeENINotFound)
	}
}
