package localvpc_test

import (
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The AWS CLI's JSON, as far as these tests read it.
type cliENI struct {
	NetworkInterfaceID string `json:"NetworkInterfaceId"`
	Status             string
	SubnetID           string `json:"SubnetId"`
	MacAddress         string
	Description        string
	PrivateIPAddress   string `json:"PrivateIpAddress"`
	PrivateIPAddresses []struct {
		PrivateIPAddress string `json:"PrivateIpAddress"`
		Primary          bool
	} `json:"PrivateIpAddresses"`
	Attachment *struct {
		AttachmentID string `json:"AttachmentId"`
		InstanceID   string `json:"InstanceId"`
		DeviceIndex  int
		Status       string
	}
	TagSet []struct{ Key, Value string }
}

func (n cliENI) addresses() []string {
	var out []string
	for _, a := range n.PrivateIPAddresses {
		out = append(out, a.PrivateIPAddress)
	}
	return out
}

func (n cliENI) tags() map[string]string {
	out := map[string]string{}
	for _, kv := range n.TagSet {
		out[kv.Key] = kv.Value
	}
	return out
}

type cliENIs struct {
	NetworkInterfaces []cliENI
}

func (l cliENIs) ids() []string {
	var out []string
	for _, n := range l.NetworkInterfaces {
		out = append(out, n.NetworkInterfaceID)
	}
	sort.Strings(out)
	return out
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	sort.Strings(out)
	return out
}

// TestAWSCLI drives the ENI lifecycle with Debian's AWS CLI v2 against a
// local VPC started by `vpcnet local up`, through the endpoint and the
// credentials it publishes: what an operator does by hand.
func TestAWSCLI(t *testing.T) {
	v := up(t, tagCLI)
	cli := newAWSCLI(t, v.Control, v.AccessKeyID, v.SecretAccessKey)
	inst1, inst2 := v.Instances[0], v.Instances[1]
	subnet1, subnet2 := v.Subnets[0], v.Subnets[1]

	var instances struct {
		Reservations []struct {
			Instances []struct {
				InstanceID       string `json:"InstanceId"`
				PrivateIPAddress string `json:"PrivateIpAddress"`
				InstanceType     string
			}
		}
	}
	cli.run(t, &instances, "describe-instances")
	got := map[string]string{}
	for _, r := range instances.Reservations {
		for _, in := range r.Instances {
			got[in.InstanceID] = in.PrivateIPAddress
		}
	}
	if len(got) != 2 || got[inst1.ID] != inst1.PrivateIP || got[inst2.ID] != inst2.PrivateIP {
		t.Fatalf("describe-instances: %v; want %s=%s and %s=%s", got, inst1.ID, inst1.PrivateIP, inst2.ID, inst2.PrivateIP)
	}

	// Create, with tags, and find it again.
	var created struct{ NetworkInterface cliENI }
	cli.run(t, &created, "create-network-interface", "--subnet-id", subnet1.ID, "--description", "made by the cli",
		"--tag-specifications", "ResourceType=network-interface,Tags=[{Key=owner,Value=cli},{Key=team,Value=net}]")
	a := created.NetworkInterface
	if a.Status != "available" || a.SubnetID != subnet1.ID || len(a.PrivateIPAddresses) != 1 ||
		!netip.MustParsePrefix(subnet1.CIDR).Contains(netip.MustParseAddr(a.PrivateIPAddress)) {
		t.Fatalf("new ENI %+v: want available in %s with one address of %s", a, subnet1.ID, subnet1.CIDR)
	}
	var b struct{ NetworkInterface cliENI }
	cli.run(t, &b, "create-network-interface", "--subnet-id", subnet2.ID)

	// Attach: the real control plane completes it once the device exists
	// on the instance.
	var att struct {
		AttachmentID string `json:"AttachmentId"`
	}
	cli.run(t, &att, "attach-network-interface", "--network-interface-id", a.NetworkInterfaceID,
		"--instance-id", inst1.ID, "--device-index", "1")
	testenv.EventuallyTrue(t, "the CLI sees the attachment attached", converge, func() bool {
		var l cliENIs
		cli.run(t, &l, "describe-network-interfaces", "--network-interface-ids", a.NetworkInterfaceID)
		n := l.NetworkInterfaces[0]
		return n.Attachment != nil && n.Attachment.Status == "attached" && n.Status == "in-use" &&
			n.Attachment.AttachmentID == att.AttachmentID && n.Attachment.InstanceID == inst1.ID
	})
	if l := waitDevice(t, inst1.Namespace, a.MacAddress); l.Attrs().Name != "eth1" {
		t.Errorf("device of the ENI at device index 1 is %s, want eth1", l.Attrs().Name)
	}

	t.Run("private addresses", func(t *testing.T) {
		var assigned struct {
			AssignedPrivateIPAddresses []struct {
				PrivateIPAddress string `json:"PrivateIpAddress"`
			} `json:"AssignedPrivateIpAddresses"`
		}
		cli.run(t, &assigned, "assign-private-ip-addresses", "--network-interface-id", a.NetworkInterfaceID,
			"--secondary-private-ip-address-count", "2")
		if len(assigned.AssignedPrivateIPAddresses) != 2 {
			t.Fatalf("assigned %+v, want 2 addresses", assigned)
		}
		gone := assigned.AssignedPrivateIPAddresses[0].PrivateIPAddress
		kept := assigned.AssignedPrivateIPAddresses[1].PrivateIPAddress
		cli.run(t, nil, "unassign-private-ip-addresses", "--network-interface-id", a.NetworkInterfaceID,
			"--private-ip-addresses", gone)
		var l cliENIs
		cli.run(t, &l, "describe-network-interfaces", "--network-interface-ids", a.NetworkInterfaceID)
		if have := l.NetworkInterfaces[0].addresses(); !slices.Equal(sorted(have...), sorted(a.PrivateIPAddress, kept)) {
			t.Fatalf("addresses after assigning 2 and unassigning %s: %v, want %s and %s", gone, have, a.PrivateIPAddress, kept)
		}

		// m5.large: 10 addresses per interface. Two are taken.
		if code := cli.fails(t, "assign-private-ip-addresses", "--network-interface-id", a.NetworkInterfaceID,
			"--secondary-private-ip-address-count", "9"); code != "PrivateIpAddressLimitExceeded" {
			t.Errorf("2+9 addresses on an m5.large ENI: %s, want PrivateIpAddressLimitExceeded", code)
		}
		cli.run(t, nil, "assign-private-ip-addresses", "--network-interface-id", a.NetworkInterfaceID,
			"--secondary-private-ip-address-count", "8")
		if code := cli.fails(t, "assign-private-ip-addresses", "--network-interface-id", a.NetworkInterfaceID,
			"--secondary-private-ip-address-count", "1"); code != "PrivateIpAddressLimitExceeded" {
			t.Errorf("an 11th address on an m5.large ENI: %s, want PrivateIpAddressLimitExceeded", code)
		}
	})

	t.Run("tags and filters", func(t *testing.T) {
		cli.run(t, nil, "create-tags", "--resources", b.NetworkInterface.NetworkInterfaceID, "--tags", "Key=owner,Value=someone-else")
		cli.run(t, nil, "delete-tags", "--resources", a.NetworkInterfaceID, "--tags", "Key=team")
		var l cliENIs
		cli.run(t, &l, "describe-network-interfaces", "--network-interface-ids", a.NetworkInterfaceID)
		if tags := l.NetworkInterfaces[0].tags(); len(tags) != 1 || tags["owner"] != "cli" {
			t.Errorf("tags after deleting team: %v, want owner=cli only", tags)
		}
		p1, p2 := primaryOf(t, cli, inst1.ID), primaryOf(t, cli, inst2.ID)
		all := []string{a.NetworkInterfaceID, b.NetworkInterface.NetworkInterfaceID, p1, p2}
		for _, c := range []struct {
			filters []string
			want    []string
		}{
			{[]string{"Name=tag:owner,Values=cli"}, []string{a.NetworkInterfaceID}},
			{[]string{"Name=tag:owner,Values=cli,someone-else"}, []string{a.NetworkInterfaceID, b.NetworkInterface.NetworkInterfaceID}},
			{[]string{"Name=tag-key,Values=owner"}, []string{a.NetworkInterfaceID, b.NetworkInterface.NetworkInterfaceID}},
			{[]string{"Name=tag-key,Values=team"}, nil},
			{[]string{"Name=attachment.instance-id,Values=" + inst1.ID}, []string{a.NetworkInterfaceID, p1}},
			{[]string{"Name=status,Values=available"}, []string{b.NetworkInterface.NetworkInterfaceID}},
			{[]string{"Name=subnet-id,Values=" + subnet2.ID}, []string{b.NetworkInterface.NetworkInterfaceID, p2}},
			{[]string{"Name=subnet-id,Values=" + subnet2.ID, "Name=status,Values=in-use"}, []string{p2}},
			{[]string{"Name=vpc-id,Values=" + v.VPCID}, all},
			{[]string{"Name=vpc-id,Values=vpc-0123456789abcdef0"}, nil},
		} {
			var l cliENIs
			cli.run(t, &l, append([]string{"describe-network-interfaces", "--filters"}, c.filters...)...)
			if !slices.Equal(l.ids(), sorted(c.want...)) {
				t.Errorf("filters %v: %v, want %v", c.filters, l.ids(), sorted(c.want...))
			}
		}
	})

	t.Run("attachment limit", func(t *testing.T) {
		// m5.large: 3 interfaces. eth0 and eth1 are there.
		var c, d struct{ NetworkInterface cliENI }
		cli.run(t, &c, "create-network-interface", "--subnet-id", subnet1.ID)
		cli.run(t, &d, "create-network-interface", "--subnet-id", subnet1.ID)
		cli.run(t, nil, "attach-network-interface", "--network-interface-id", c.NetworkInterface.NetworkInterfaceID,
			"--instance-id", inst1.ID, "--device-index", "2")
		if code := cli.fails(t, "attach-network-interface", "--network-interface-id", d.NetworkInterface.NetworkInterfaceID,
			"--instance-id", inst1.ID, "--device-index", "3"); code != "AttachmentLimitExceeded" {
			t.Errorf("a 4th ENI on an m5.large: %s, want AttachmentLimitExceeded", code)
		}
		if code := cli.fails(t, "attach-network-interface", "--network-interface-id", b.NetworkInterface.NetworkInterfaceID,
			"--instance-id", inst2.ID, "--device-index", "0"); code != "InvalidParameterValue" {
			t.Errorf("attach at a device index in use: %s, want InvalidParameterValue", code)
		}
	})

	t.Run("detach and delete", func(t *testing.T) {
		if code := cli.fails(t, "delete-network-interface", "--network-interface-id", a.NetworkInterfaceID); code != "InvalidParameterValue" {
			t.Errorf("deleting an attached ENI: %s, want InvalidParameterValue (in use)", code)
		}
		var l cliENIs
		cli.run(t, &l, "describe-network-interfaces", "--filters", "Name=attachment.instance-id,Values="+inst1.ID,
			"Name=attachment.device-index,Values=0")
		if code := cli.fails(t, "detach-network-interface", "--attachment-id", l.NetworkInterfaces[0].Attachment.AttachmentID); code != "OperationNotPermitted" {
			t.Errorf("detaching a primary ENI: %s, want OperationNotPermitted", code)
		}

		cli.run(t, nil, "detach-network-interface", "--attachment-id", att.AttachmentID)
		testenv.EventuallyTrue(t, "the ENI is available again", converge, func() bool {
			var l cliENIs
			cli.run(t, &l, "describe-network-interfaces", "--network-interface-ids", a.NetworkInterfaceID)
			return l.NetworkInterfaces[0].Status == "available" && l.NetworkInterfaces[0].Attachment == nil
		})
		if dev := deviceIn(t, inst1.Namespace, a.MacAddress); dev != nil {
			t.Errorf("device %s still on the instance after the detach completed", dev.Attrs().Name)
		}
		cli.run(t, nil, "delete-network-interface", "--network-interface-id", a.NetworkInterfaceID)
		for _, args := range [][]string{
			{"delete-network-interface", "--network-interface-id", a.NetworkInterfaceID},
			{"describe-network-interfaces", "--network-interface-ids", a.NetworkInterfaceID},
			{"attach-network-interface", "--network-interface-id", a.NetworkInterfaceID, "--instance-id", inst1.ID, "--device-index", "1"},
		} {
			if code := cli.fails(t, args...); code != "InvalidNetworkInterfaceID.NotFound" {
				t.Errorf("%s of a deleted ENI: %s, want InvalidNetworkInterfaceID.NotFound", args[0], code)
			}
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		for _, c := range []struct{ name, key, secret string }{
			{"wrong secret", v.AccessKeyID, v.SecretAccessKey + "x"},
			{"unknown key", "AKIAIOSFODNN7EXAMPLE", v.SecretAccessKey},
		} {
			bad := newAWSCLI(t, v.Control, c.key, c.secret)
			if code := bad.fails(t, "describe-vpcs"); code != "AuthFailure" {
				t.Errorf("CLI with a %s: %s, want AuthFailure", c.name, code)
			}
			sdk := ec2.New(ec2.Options{Region: v.Region, BaseEndpoint: aws.String(v.Endpoint),
				Credentials: credentials.NewStaticCredentialsProvider(c.key, c.secret, "")}, noRetries)
			_, err := sdk.DescribeVpcs(t.Context(), &ec2.DescribeVpcsInput{})
			if code := apiCode(err); code != "AuthFailure" {
				t.Errorf("SDK with a %s: %v, want AuthFailure", c.name, err)
			}
		}
		// The same calls with the published credentials go through.
		var vpcs struct {
			Vpcs []struct {
				VpcID string `json:"VpcId"`
			}
		}
		cli.run(t, &vpcs, "describe-vpcs")
		if len(vpcs.Vpcs) != 1 || vpcs.Vpcs[0].VpcID != v.VPCID {
			t.Errorf("describe-vpcs: %+v, want %s", vpcs, v.VPCID)
		}
		if _, err := v.EC2().DescribeVpcs(t.Context(), &ec2.DescribeVpcsInput{}); err != nil {
			t.Errorf("SDK with the operator's credentials: %v", err)
		}
	})
}

// primaryOf returns the ID of an instance's primary ENI, as the CLI finds
// it.
func primaryOf(t *testing.T, cli *awsCLI, instanceID string) string {
	t.Helper()
	var l cliENIs
	cli.run(t, &l, "describe-network-interfaces", "--filters", "Name=attachment.instance-id,Values="+instanceID,
		"Name=attachment.device-index,Values=0")
	if len(l.NetworkInterfaces) != 1 {
		t.Fatalf("primary ENI of %s: %v", instanceID, l.ids())
	}
	return l.NetworkInterfaces[0].NetworkInterfaceID
}

// TestSubnetRunsOutOfAddresses uses a /28 subnet given to `up`: 16
// addresses, 5 reserved by EC2, one taken by the instance.
func TestSubnetRunsOutOfAddresses(t *testing.T) {
	v := up(t, tagCLI, "--vpc-cidr", "10.7.0.0/16", "--subnets", "10.7.0.0/28", "--instances", "1")
	cli := newAWSCLI(t, v.Control, v.AccessKeyID, v.SecretAccessKey)
	if code := cli.fails(t, "create-network-interface", "--subnet-id", v.Subnets[0].ID,
		"--secondary-private-ip-address-count", "10"); code != "InsufficientFreeAddressesInSubnet" {
		t.Fatalf("11 addresses from a /28 with 10 free: %s, want InsufficientFreeAddressesInSubnet", code)
	}
	var created struct{ NetworkInterface cliENI }
	cli.run(t, &created, "create-network-interface", "--subnet-id", v.Subnets[0].ID, "--secondary-private-ip-address-count", "9")
	addrs := created.NetworkInterface.addresses()
	if len(addrs) != 10 {
		t.Fatalf("addresses of the ENI: %v, want 10", addrs)
	}
	for _, a := range addrs {
		switch a {
		case "10.7.0.0", "10.7.0.1", "10.7.0.2", "10.7.0.3", "10.7.0.15", v.Instances[0].PrivateIP:
			t.Errorf("ENI got %s, reserved or taken", a)
		}
	}
	if code := cli.fails(t, "create-network-interface", "--subnet-id", v.Subnets[0].ID); code != "InsufficientFreeAddressesInSubnet" {
		t.Errorf("an ENI in a full subnet: %s, want InsufficientFreeAddressesInSubnet", code)
	}
}
