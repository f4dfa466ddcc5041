package ec2api

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The fidelity tests drive every action through aws-sdk-go-v2, as vpcnet's
// agents do, and read the answers the way the SDK parses them.

func TestSDKNetworkInterfaceLifecycle(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client()

	created, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(c.subnet.ID), Description: aws.String("task eni"), SecondaryPrivateIpAddressCount: aws.Int32(1),
		Ipv6AddressCount: aws.Int32(1),
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{{Key: aws.String("vpcnet:task"), Value: aws.String("t1")}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	eni := created.NetworkInterface
	id := aws.ToString(eni.NetworkInterfaceId)
	if !strings.HasPrefix(id, "eni-") || eni.Status != types.NetworkInterfaceStatusAvailable || aws.ToString(eni.MacAddress) == "" ||
		len(eni.PrivateIpAddresses) != 2 || !aws.ToBool(eni.PrivateIpAddresses[0].Primary) || len(eni.Ipv6Addresses) != 1 ||
		len(eni.TagSet) != 1 || len(eni.Groups) != 1 || aws.ToString(eni.Groups[0].GroupName) != "default" || !aws.ToBool(eni.SourceDestCheck) ||
		aws.ToString(eni.AvailabilityZone) != "us-east-1a" || aws.ToString(eni.VpcId) != c.vpc.ID {
		t.Fatalf("created ENI: %+v", eni)
	}

	att, err := api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(id), InstanceId: aws.String(c.instance.ID), DeviceIndex: aws.Int32(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	attachmentID := aws.ToString(att.AttachmentId)
	described := func() types.NetworkInterface {
		t.Helper()
		out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.NetworkInterfaces) != 1 {
			t.Fatalf("%d ENIs for one ID", len(out.NetworkInterfaces))
		}
		return out.NetworkInterfaces[0]
	}
	if a := described().Attachment; a == nil || a.Status != types.AttachmentStatusAttaching || aws.ToString(a.InstanceId) != c.instance.ID || aws.ToInt32(a.DeviceIndex) != 1 {
		t.Fatalf("attachment right after AttachNetworkInterface: %+v", a)
	}
	if err := c.model.CompleteAttach(attachmentID); err != nil {
		t.Fatal(err)
	}
	if got := described(); got.Attachment.Status != types.AttachmentStatusAttached || got.Status != types.NetworkInterfaceStatusInUse || got.Attachment.AttachTime == nil {
		t.Fatalf("after CompleteAttach: %+v", got.Attachment)
	}

	assigned, err := api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(id), SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err != nil || len(assigned.AssignedPrivateIpAddresses) != 2 || aws.ToString(assigned.NetworkInterfaceId) != id {
		t.Fatalf("assign 2 addresses: %+v %v", assigned, err)
	}
	prefixes, err := api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(id), Ipv4PrefixCount: aws.Int32(1)})
	if err != nil || len(prefixes.AssignedIpv4Prefixes) != 1 {
		t.Fatalf("assign a prefix: %+v %v", prefixes, err)
	}
	// t3.medium: 6 slots; 2 + 2 addresses and 1 prefix take 5.
	_, err = api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(id), SecondaryPrivateIpAddressCount: aws.Int32(2)})
	wantAPIError(t, err, "PrivateIpAddressLimitExceeded")
	if got := described(); len(got.PrivateIpAddresses) != 4 || len(got.Ipv4Prefixes) != 1 {
		t.Fatalf("after assignments: %d addresses, %d prefixes", len(got.PrivateIpAddresses), len(got.Ipv4Prefixes))
	}
	if _, err := api.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(id), PrivateIpAddresses: []string{aws.ToString(assigned.AssignedPrivateIpAddresses[0].PrivateIpAddress)},
		Ipv4Prefixes: []string{aws.ToString(prefixes.AssignedIpv4Prefixes[0].Ipv4Prefix)},
	}); err != nil {
		t.Fatal(err)
	}
	_, err = api.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(id), PrivateIpAddresses: []string{aws.ToString(eni.PrivateIpAddress)},
	})
	wantAPIError(t, err, "InvalidParameterValue")

	v6, err := api.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(id), Ipv6AddressCount: aws.Int32(1), Ipv6PrefixCount: aws.Int32(1)})
	if err != nil || len(v6.AssignedIpv6Addresses) != 1 || len(v6.AssignedIpv6Prefixes) != 1 {
		t.Fatalf("assign IPv6: %+v %v", v6, err)
	}
	un6, err := api.UnassignIpv6Addresses(ctx, &ec2.UnassignIpv6AddressesInput{NetworkInterfaceId: aws.String(id), Ipv6Addresses: v6.AssignedIpv6Addresses})
	if err != nil || !slices.Equal(un6.UnassignedIpv6Addresses, v6.AssignedIpv6Addresses) {
		t.Fatalf("unassign IPv6: %+v %v", un6, err)
	}

	if _, err := api.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(id), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(id), Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(attachmentID), DeleteOnTermination: aws.Bool(true)},
	}); err != nil {
		t.Fatal(err)
	}
	if got := described(); aws.ToBool(got.SourceDestCheck) || !aws.ToBool(got.Attachment.DeleteOnTermination) {
		t.Fatalf("after modify: sourceDestCheck %v deleteOnTermination %v", aws.ToBool(got.SourceDestCheck), aws.ToBool(got.Attachment.DeleteOnTermination))
	}

	_, err = api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
	wantAPIError(t, err, "InvalidParameterValue")
	if _, err := api.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(attachmentID)}); err != nil {
		t.Fatal(err)
	}
	if a := described().Attachment; a == nil || a.Status != types.AttachmentStatusDetaching {
		t.Fatalf("right after DetachNetworkInterface: %+v", a)
	}
	if err := c.model.CompleteDetach(attachmentID); err != nil {
		t.Fatal(err)
	}
	if got := described(); got.Attachment != nil || got.Status != types.NetworkInterfaceStatusAvailable {
		t.Fatalf("after CompleteDetach: %+v", got)
	}
	if _, err := api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	wantAPIError(t, err, "InvalidNetworkInterfaceID.NotFound")
}

func TestSDKErrors(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client(noRetries)
	spare, err := c.model.CreateNetworkInterface(vpcCreateInput{SubnetID: c.subnet.ID})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.model.CreateNetworkInterface(vpcCreateInput{SubnetID: c.subnetB.ID})
	if err != nil {
		t.Fatal(err)
	}
	primary, err := c.model.NetworkInterface(c.instance.PrimaryENIID)
	if err != nil {
		t.Fatal(err)
	}
	attach := func(eni string, dev int32) error {
		_, err := api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni), InstanceId: aws.String(c.instance.ID), DeviceIndex: aws.Int32(dev)})
		return err
	}
	for _, tc := range []struct {
		name string
		call func() error
		code string
	}{
		{"unknown subnet", func() error {
			_, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String("subnet-00000000000000000")})
			return err
		}, "InvalidSubnetID.NotFound"},
		{"unknown group", func() error {
			_, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(c.subnet.ID), Groups: []string{"sg-00000000000000000"}})
			return err
		}, "InvalidGroup.NotFound"},
		{"malformed address", func() error {
			_, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(c.subnet.ID), PrivateIpAddress: aws.String("10.0.1.300")})
			return err
		}, "InvalidParameterValue"},
		{"address in use", func() error {
			_, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(c.subnet.ID), PrivateIpAddress: aws.String(primary.PrimaryIP().String())})
			return err
		}, "InvalidIPAddress.InUse"},
		{"unknown ENI", func() error {
			_, err := api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String("eni-00000000000000000")})
			return err
		}, "InvalidNetworkInterfaceID.NotFound"},
		{"attach an in-use ENI", func() error { return attach(primary.ID, 1) }, "InvalidNetworkInterface.InUse"},
		{"device index in use", func() error { return attach(spare.ID, 0) }, "InvalidParameterValue"},
		{"ENI in another zone", func() error { return attach(other.ID, 1) }, "InvalidParameterCombination"},
		{"unknown instance", func() error {
			_, err := api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(spare.ID), InstanceId: aws.String("i-00000000000000000"), DeviceIndex: aws.Int32(1)})
			return err
		}, "InvalidInstanceID.NotFound"},
		{"detach the primary", func() error {
			_, err := api.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(primary.Attachment.ID)})
			return err
		}, "OperationNotPermitted"},
		{"bad filter", func() error {
			_, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("colour"), Values: []string{"x"}}}})
			return err
		}, "InvalidParameterValue"},
		{"MaxResults below 5", func() error {
			_, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(4)})
			return err
		}, "InvalidParameterValue"},
		{"unknown instance type", func() error {
			_, err := api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"x9.huge"}})
			return err
		}, "InvalidInstanceType"},
		{"unknown VPC", func() error {
			_, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{"vpc-00000000000000000"}})
			return err
		}, "InvalidVpcID.NotFound"},
		{"duplicate group", func() error {
			_, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("default"), Description: aws.String("x"), VpcId: aws.String(c.vpc.ID)})
			return err
		}, "InvalidGroup.Reserved"},
		{"tags on an unknown resource", func() error {
			_, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"i-00000000000000000"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
			return err
		}, "InvalidInstanceID.NotFound"},
		{"dry run", func() error {
			_, err := api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(spare.ID), DryRun: aws.Bool(true)})
			return err
		}, "DryRunOperation"},
		{"wrong secret", func() error {
			_, err := c.clientWith(c.model.RootCredentials().AccessKeyID, "wrong", "", noRetries).DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
			return err
		}, "AuthFailure"},
		{"unknown key", func() error {
			_, err := c.clientWith("AKIAUNKNOWNKEY000000", "x", "", noRetries).DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
			return err
		}, "AuthFailure"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantAPIError(t, tc.call(), tc.code) })
	}
	if _, err := c.model.NetworkInterface(spare.ID); err != nil {
		t.Errorf("a dry-run delete deleted the ENI: %v", err)
	}
}

func TestErrorDocumentAndStatus(t *testing.T) {
	c := newCloud(t, Config{Auth: AuthenticatorFunc(func(*http.Request, []byte) (string, error) { return "test", nil })})
	for _, tc := range []struct {
		name, form string
		status     int
		code       string
	}{
		{"unknown action", "Action=LaunchRockets&Version=2016-11-15", 400, "InvalidAction"},
		{"dry run", "Action=DescribeVpcs&Version=2016-11-15&DryRun=true", 412, "DryRunOperation"},
		{"missing parameter", "Action=DeleteNetworkInterface&Version=2016-11-15", 400, "MissingParameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(c.server.URL, "application/x-www-form-urlencoded", strings.NewReader(tc.form))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body := readAll(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(body, "<Response><Errors><Error><Code>"+tc.code+"</Code>") || !strings.Contains(body, "<RequestID>") {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
		})
	}
	// GET with the query string works too, and replies in the EC2 namespace.
	resp, err := http.Get(c.server.URL + "/?Action=DescribeVpcs&Version=2016-11-15")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, `<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`) || !strings.Contains(body, "<requestId>") {
		t.Fatalf("GET DescribeVpcs: %d %s", resp.StatusCode, body)
	}
}

func TestSDKDescribeInstancesAndTypes(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client()
	out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{c.instance.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("reservations: %+v", out.Reservations)
	}
	inst := out.Reservations[0].Instances[0]
	if aws.ToString(inst.InstanceId) != c.instance.ID || inst.InstanceType != "t3.medium" || inst.State.Name != types.InstanceStateNameRunning ||
		aws.ToInt32(inst.State.Code) != 16 || aws.ToString(inst.Placement.AvailabilityZone) != "us-east-1a" ||
		aws.ToString(inst.PrivateIpAddress) != "10.0.1.4" || len(inst.NetworkInterfaces) != 1 || inst.IamInstanceProfile == nil {
		t.Fatalf("instance: %+v", inst)
	}
	ni := inst.NetworkInterfaces[0]
	if aws.ToInt32(ni.Attachment.DeviceIndex) != 0 || ni.Attachment.Status != types.AttachmentStatusAttached || aws.ToString(ni.MacAddress) == "" || len(ni.PrivateIpAddresses) != 1 {
		t.Fatalf("instance ENI: %+v", ni)
	}
	filtered, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"stopped"}}}})
	if err != nil || len(filtered.Reservations) != 0 {
		t.Fatalf("filter on stopped: %+v %v", filtered, err)
	}
	_, err = api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-00000000000000000"}})
	wantAPIError(t, err, "InvalidInstanceID.NotFound")

	types_, err := api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"t3.medium", "c5.4xlarge"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[types.InstanceType][3]int32{"t3.medium": {3, 6, 6}, "c5.4xlarge": {8, 30, 30}}
	for _, it := range types_.InstanceTypes {
		n := it.NetworkInfo
		w := want[it.InstanceType]
		if aws.ToInt32(n.MaximumNetworkInterfaces) != w[0] || aws.ToInt32(n.Ipv4AddressesPerInterface) != w[1] || aws.ToInt32(n.Ipv6AddressesPerInterface) != w[2] ||
			!aws.ToBool(n.Ipv6Supported) || len(n.NetworkCards) != 1 || aws.ToInt32(n.NetworkCards[0].MaximumNetworkInterfaces) != w[0] {
			t.Errorf("%s network info: %+v", it.InstanceType, n)
		}
		delete(want, it.InstanceType)
	}
	if len(want) != 0 {
		t.Errorf("types missing from the answer: %v", want)
	}
}

func TestSDKSubnetsVPCsAndGroups(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client()
	if _, err := c.model.CreateNetworkInterface(vpcCreateInput{SubnetID: c.subnet.ID, SecondaryCount: 2}); err != nil {
		t.Fatal(err)
	}
	subnets, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{c.vpc.ID}}}})
	if err != nil || len(subnets.Subnets) != 2 {
		t.Fatalf("subnets: %+v %v", subnets, err)
	}
	for _, s := range subnets.Subnets {
		want := int32(251)
		if aws.ToString(s.SubnetId) == c.subnet.ID {
			want -= 1 + 3 // the instance's primary address and the new ENI's three
		}
		if aws.ToInt32(s.AvailableIpAddressCount) != want || len(s.Ipv6CidrBlockAssociationSet) != 1 {
			t.Errorf("subnet %s: %d available (want %d), IPv6 %+v", aws.ToString(s.SubnetId), aws.ToInt32(s.AvailableIpAddressCount), want, s.Ipv6CidrBlockAssociationSet)
		}
	}
	vpcs, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	if err != nil || len(vpcs.Vpcs) != 1 || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "10.0.0.0/16" ||
		!strings.HasPrefix(aws.ToString(vpcs.Vpcs[0].Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock), "fd") {
		t.Fatalf("VPCs: %+v %v", vpcs, err)
	}

	sg, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web"), VpcId: aws.String(c.vpc.ID)})
	if err != nil {
		t.Fatal(err)
	}
	gid := aws.ToString(sg.GroupId)
	perm := []types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
		IpRanges:         []types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}},
		Ipv6Ranges:       []types.Ipv6Range{{CidrIpv6: aws.String("::/0")}},
		UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(gid)}},
	}}
	auth, err := api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(gid), IpPermissions: perm})
	if err != nil || !aws.ToBool(auth.Return) || len(auth.SecurityGroupRules) != 3 {
		t.Fatalf("authorize ingress: %+v %v", auth, err)
	}
	_, err = api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(gid), IpPermissions: perm})
	wantAPIError(t, err, "InvalidPermission.Duplicate")
	if _, err := api.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(gid), IpPermissions: []types.IpPermission{{
		IpProtocol: aws.String("udp"), FromPort: aws.Int32(53), ToPort: aws.Int32(53), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.2/32")}},
	}}}); err != nil {
		t.Fatal(err)
	}
	groups, err := api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{gid}})
	if err != nil || len(groups.SecurityGroups) != 1 {
		t.Fatalf("describe group: %+v %v", groups, err)
	}
	g := groups.SecurityGroups[0]
	if len(g.IpPermissions) != 1 || len(g.IpPermissions[0].IpRanges) != 1 || len(g.IpPermissions[0].Ipv6Ranges) != 1 ||
		len(g.IpPermissions[0].UserIdGroupPairs) != 1 || aws.ToInt32(g.IpPermissions[0].FromPort) != 443 || len(g.IpPermissionsEgress) != 2 {
		t.Fatalf("group permissions: ingress %+v egress %+v", g.IpPermissions, g.IpPermissionsEgress)
	}
	if _, err := api.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(gid), IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	defaults, err := api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"default"}}}})
	if err != nil || len(defaults.SecurityGroups) != 1 {
		t.Fatalf("default group: %+v %v", defaults, err)
	}
	d := defaults.SecurityGroups[0]
	if len(d.IpPermissions) != 1 || aws.ToString(d.IpPermissions[0].IpProtocol) != "-1" || d.IpPermissions[0].FromPort != nil ||
		aws.ToString(d.IpPermissions[0].UserIdGroupPairs[0].GroupId) != aws.ToString(d.GroupId) {
		t.Fatalf("default group ingress: %+v", d.IpPermissions)
	}

	if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{gid, c.subnet.ID}, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("net")}}}); err != nil {
		t.Fatal(err)
	}
	tagged, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("tag:team"), Values: []string{"net"}}}})
	if err != nil || len(tagged.Subnets) != 1 || aws.ToString(tagged.Subnets[0].SubnetId) != c.subnet.ID {
		t.Fatalf("subnets tagged team=net: %+v %v", tagged, err)
	}
	if _, err := api.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{c.subnet.ID}, Tags: []types.Tag{{Key: aws.String("team")}}}); err != nil {
		t.Fatal(err)
	}
	tagged, err = api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{"team"}}}})
	if err != nil || len(tagged.Subnets) != 0 {
		t.Fatalf("subnets with a team tag after DeleteTags: %+v %v", tagged, err)
	}
}

func TestSDKPagination(t *testing.T) {
	c := newCloud(t, Config{})
	for range 11 {
		if _, err := c.model.CreateNetworkInterface(vpcCreateInput{SubnetID: c.subnet.ID, Tags: map[string]string{"pool": "warm"}}); err != nil {
			t.Fatal(err)
		}
	}
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.client(), &ec2.DescribeNetworkInterfacesInput{
		MaxResults: aws.Int32(5), Filters: []types.Filter{{Name: aws.String("tag:pool"), Values: []string{"warm"}}},
	})
	var ids []string
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, n := range page.NetworkInterfaces {
			ids = append(ids, aws.ToString(n.NetworkInterfaceId))
		}
	}
	if pages != 3 || len(ids) != 11 || len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 11 {
		t.Fatalf("%d pages, ENIs %v", pages, ids)
	}
}

func TestSDKRoleCredentials(t *testing.T) {
	c := newCloud(t, Config{})
	k, err := c.model.InstanceCredentials(c.instance.ID)
	if err != nil {
		t.Fatal(err)
	}
	api := c.clientWith(k.AccessKeyID, k.SecretAccessKey, k.SessionToken)
	if _, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{
		Name: aws.String("attachment.instance-id"), Values: []string{c.instance.ID},
	}}}); err != nil {
		t.Fatalf("a call signed with the instance's role credentials: %v", err)
	}
}
