package localvpc_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// gateway is the VPC router's address in a subnet: network + 1.
func gateway(cidr string) string {
	return netip.MustParsePrefix(cidr).Masked().Addr().Next().String()
}

// useSecondaryDevice configures addr on an ENI's device inside an instance
// the way EC2's own network scripts do: the address, and a routing table
// of the device's own so that what is sent from addr leaves through that
// ENI (the source/destination check drops it anywhere else).
func useSecondaryDevice(t *testing.T, nsName, dev, addr, gw string, table int) {
	t.Helper()
	tbl := fmt.Sprint(table)
	for _, args := range [][]string{
		{"link", "set", dev, "up"},
		{"addr", "add", addr + "/32", "dev", dev},
		{"route", "add", gw, "dev", dev, "table", tbl},
		{"route", "add", "default", "via", gw, "dev", dev, "table", tbl},
		{"rule", "add", "from", addr, "table", tbl},
	} {
		mustRun(t, nsName, "ip", args...)
	}
}

func primaryENI(t *testing.T, c *ec2.Client, instanceID string) ec2types.NetworkInterface {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}},
		{Name: aws.String("attachment.device-index"), Values: []string{"0"}},
	}})
	if err != nil || len(out.NetworkInterfaces) != 1 {
		t.Fatalf("primary ENI of %s: %v, %v", instanceID, out, err)
	}
	return out.NetworkInterfaces[0]
}

func privateAddresses(n ec2types.NetworkInterface) []string {
	var out []string
	for _, a := range n.PrivateIpAddresses {
		out = append(out, *a.PrivateIpAddress)
	}
	return out
}

// TestTrafficBetweenInstances pings across the VPC's two subnets: the
// fabric routes between them.
func TestTrafficBetweenInstances(t *testing.T) {
	testenv.Tool(t, "ping")
	v := up(t, tagDatapath)
	in1, in2 := v.Instances[0], v.Instances[1]
	if !pings(in1.Namespace, in2.PrivateIP) || !pings(in2.Namespace, in1.PrivateIP) {
		t.Fatalf("instances %s (%s) and %s (%s) in two subnets do not reach each other", in1.ID, in1.PrivateIP, in2.ID, in2.PrivateIP)
	}
	// An address of the subnet that no ENI holds goes nowhere.
	nobody := netip.MustParseAddr(in2.PrivateIP).Next().Next().Next().String()
	if pings(in1.Namespace, nobody) {
		t.Errorf("%s answers, but no ENI holds it", nobody)
	}
}

// TestAddressesFollowTheAPI attaches ENIs and moves a secondary address
// between them through the SDK, and checks where the VPC delivers it.
func TestAddressesFollowTheAPI(t *testing.T) {
	testenv.Tool(t, "ping")
	// Instances 1 and 3 are in the first subnet, 2 in the second.
	v := up(t, tagDatapath, "--instances", "3")
	c := v.EC2()
	in1, in2, in3 := v.Instances[0], v.Instances[1], v.Instances[2]
	subnet := v.Subnets[0]
	gw := gateway(subnet.CIDR)

	a := createENI(t, c, subnet.ID)
	aID := *a.NetworkInterfaceId
	attachENI(t, c, aID, in1.ID, 1)
	if dev := waitDevice(t, in1.Namespace, *a.MacAddress); dev.Attrs().Name != "eth1" {
		t.Errorf("ENI at device index 1 appeared as %s, want eth1", dev.Attrs().Name)
	}
	waitAttachment(t, c, aID, "attached")

	assigned, err := c.AssignPrivateIpAddresses(t.Context(), &ec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(aID), SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	s := *assigned.AssignedPrivateIpAddresses[0].PrivateIpAddress
	useSecondaryDevice(t, in1.Namespace, "eth1", s, gw, 101)
	testenv.EventuallyTrue(t, "instance 2 reaches "+s+" on instance 1's eth1", converge, func() bool { return pings(in2.Namespace, s) })

	// Move the address to an ENI of instance 3. Instance 1 lets go of it,
	// as an agent would, so only the VPC's routing decides who answers.
	b := createENI(t, c, subnet.ID)
	bID := *b.NetworkInterfaceId
	attachENI(t, c, bID, in3.ID, 1)
	waitDevice(t, in3.Namespace, *b.MacAddress)
	waitAttachment(t, c, bID, "attached")
	if _, err := c.AssignPrivateIpAddresses(t.Context(), &ec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(bID), PrivateIpAddresses: []string{s}, AllowReassignment: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if have := privateAddresses(describeENI(t, c, aID)); slices.Contains(have, s) {
		t.Errorf("%s still on %s after its reassignment: %v", s, aID, have)
	}
	if have := privateAddresses(describeENI(t, c, bID)); !slices.Contains(have, s) {
		t.Errorf("%s not on %s after its reassignment: %v", s, bID, have)
	}
	mustRun(t, in1.Namespace, "ip", "addr", "del", s+"/32", "dev", "eth1")
	useSecondaryDevice(t, in3.Namespace, "eth1", s, gw, 101)
	testenv.EventuallyTrue(t, "instance 2 reaches "+s+" on instance 3 after the reassignment", converge, func() bool { return pings(in2.Namespace, s) })

	if _, err := c.UnassignPrivateIpAddresses(t.Context(), &ec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(bID), PrivateIpAddresses: []string{s}}); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, s+" unreachable once unassigned (still configured on instance 3)", converge, func() bool { return !pings(in2.Namespace, s) })
	if !pings(in2.Namespace, in3.PrivateIP) {
		t.Errorf("instance 3's primary address %s unreachable too", in3.PrivateIP)
	}

	// Detach: the device leaves the instance.
	if deviceIn(t, in3.Namespace, *b.MacAddress) == nil {
		t.Fatal("the device of the attached ENI is missing before the detach")
	}
	if _, err := c.DetachNetworkInterface(t.Context(), &ec2.DetachNetworkInterfaceInput{
		AttachmentId: describeENI(t, c, bID).Attachment.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	if n := waitAttachment(t, c, bID, ""); n.Status != ec2types.NetworkInterfaceStatusAvailable {
		t.Errorf("status after detach: %s, want available", n.Status)
	}
	if dev := deviceIn(t, in3.Namespace, *b.MacAddress); dev != nil {
		t.Errorf("device %s still on instance 3 after the detach completed", dev.Attrs().Name)
	}
}

// udpFlow sends marked datagrams from one namespace to a receiver in
// another and tells which arrive.
type udpFlow struct {
	t      *testing.T
	from   string
	to     string // host:port
	got    *datagrams
	marker string // an address whose datagrams always arrive
	seq    int
}

// delivered waits until a datagram from src arrives.
func (f *udpFlow) delivered(src, what string) {
	f.t.Helper()
	testenv.EventuallyTrue(f.t, what, converge, func() bool {
		f.seq++
		p := fmt.Sprint("d", f.seq)
		sendUDP(f.t, f.from, src, f.to, p)
		return f.waitFor(src, p)
	})
}

// dropped waits until a datagram from src is dropped: one sent before a
// marker that arrives never does. (Datagrams on one path arrive in order.)
func (f *udpFlow) dropped(src, what string) {
	f.t.Helper()
	testenv.EventuallyTrue(f.t, what, converge, func() bool {
		f.seq++
		p, m := fmt.Sprint("x", f.seq), fmt.Sprint("m", f.seq)
		sendUDP(f.t, f.from, src, f.to, p)
		sendUDP(f.t, f.from, f.marker, f.to, m)
		if !f.waitFor(f.marker, m) {
			return false
		}
		return !f.got.has(src, p)
	})
}

func (f *udpFlow) waitFor(src, payload string) bool {
	for range 50 {
		if f.got.has(src, payload) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestSourceDestCheck sends from an address the sending ENI does not own:
// it arrives while the ENI's check is off, and with the check on only while
// the address is assigned to the ENI.
func TestSourceDestCheck(t *testing.T) {
	v := up(t, tagDatapath)
	c := v.EC2()
	in1, in2 := v.Instances[0], v.Instances[1]
	eni := primaryENI(t, c, in1.ID)
	// An address of the first subnet that nothing holds yet.
	x := netip.MustParseAddr(in1.PrivateIP).Next().Next().Next().Next().String()
	if out, err := c.DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		{Name: aws.String("addresses.private-ip-address"), Values: []string{x}}}}); err != nil || len(out.NetworkInterfaces) != 0 {
		t.Fatalf("%s should be free: %v %v", x, out, err)
	}
	// Instance 2's group takes the datagrams from any address of the VPC,
	// so that nothing but the sender's check can drop them. (A rule that
	// names a group matches its members' assigned addresses only.)
	if _, err := c.AuthorizeSecurityGroupIngress(t.Context(), &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(v.DefaultGroup), IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("udp"), FromPort: aws.Int32(7000), ToPort: aws.Int32(7000),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}},
		}}}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, in1.Namespace, "ip", "addr", "add", x+"/32", "dev", "eth0")
	f := &udpFlow{t: t, from: in1.Namespace, to: in2.PrivateIP + ":7000", got: listenUDP(t, in2.Namespace, ":7000"), marker: in1.PrivateIP}

	setCheck := func(on bool) {
		t.Helper()
		if _, err := c.ModifyNetworkInterfaceAttribute(t.Context(), &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: eni.NetworkInterfaceId, SourceDestCheck: &ec2types.AttributeBooleanValue{Value: aws.Bool(on)}}); err != nil {
			t.Fatal(err)
		}
	}

	f.delivered(in1.PrivateIP, "a datagram from the ENI's own address arrives")
	// With the ENI's check off, the path from x is open: instance 2's
	// group lets it in.
	setCheck(false)
	f.delivered(x, "a datagram from "+x+" arrives with the ENI's source/destination check off")
	setCheck(true)
	f.dropped(x, "a datagram from "+x+", not assigned to the ENI, is dropped with the check on")

	if _, err := c.AssignPrivateIpAddresses(t.Context(), &ec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: eni.NetworkInterfaceId, PrivateIpAddresses: []string{x}}); err != nil {
		t.Fatal(err)
	}
	f.delivered(x, "a datagram from "+x+" arrives once it is assigned to the ENI")

	if _, err := c.UnassignPrivateIpAddresses(t.Context(), &ec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: eni.NetworkInterfaceId, PrivateIpAddresses: []string{x}}); err != nil {
		t.Fatal(err)
	}
	f.dropped(x, "a datagram from "+x+" is dropped again once unassigned")
}

// TestSecurityGroups builds security groups through the API and checks
// what they let through between two instances: the allowed port, not
// another, replies of allowed connections whatever the rules of the other
// direction, and a change of an ENI's groups.
func TestSecurityGroups(t *testing.T) {
	v := up(t, tagDatapath)
	c := v.EC2()
	in1, in2 := v.Instances[0], v.Instances[1]
	serveEcho(t, in2.Namespace, ":8080")
	serveEcho(t, in2.Namespace, ":8081")
	serveEcho(t, in1.Namespace, ":9090")
	p8080, p8081, back := in2.PrivateIP+":8080", in2.PrivateIP+":8081", in1.PrivateIP+":9090"

	// The default group lets its members talk to each other.
	testenv.EventuallyTrue(t, "members of the default group connect both ways", converge, func() bool {
		return connects(in1.Namespace, p8080) && connects(in1.Namespace, p8081) && connects(in2.Namespace, back)
	})

	group := func(name string) string {
		t.Helper()
		out, err := c.CreateSecurityGroup(t.Context(), &ec2.CreateSecurityGroupInput{
			GroupName: aws.String(name), Description: aws.String(name), VpcId: aws.String(v.VPCID)})
		if err != nil {
			t.Fatal(err)
		}
		return *out.GroupId
	}
	setGroups := func(instanceID string, groups ...string) {
		t.Helper()
		if _, err := c.ModifyNetworkInterfaceAttribute(t.Context(), &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: primaryENI(t, c, instanceID).NetworkInterfaceId, Groups: groups}); err != nil {
			t.Fatal(err)
		}
	}
	client, server := group("client"), group("server")
	if _, err := c.AuthorizeSecurityGroupIngress(t.Context(), &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(server), IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(client)}},
		}}}); err != nil {
		t.Fatal(err)
	}
	// The server may not open connections: whatever it sends must be a
	// reply.
	if _, err := c.RevokeSecurityGroupEgress(t.Context(), &ec2.RevokeSecurityGroupEgressInput{
		GroupId: aws.String(server), IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("-1"),
			IpRanges:   []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}},
			Ipv6Ranges: []ec2types.Ipv6Range{{CidrIpv6: aws.String("::/0")}},
		}}}); err != nil {
		t.Fatal(err)
	}
	setGroups(in1.ID, client)
	setGroups(in2.ID, server)

	testenv.EventuallyTrue(t, "port 8081, not allowed by the server's group, is dropped", converge, func() bool { return !connects(in1.Namespace, p8081) })
	if !connects(in1.Namespace, p8080) {
		t.Errorf("port 8080, allowed from the client's group, does not carry a connection (replies must pass the server's empty egress and the client's empty ingress)")
	}
	if connects(in2.Namespace, back) {
		t.Errorf("instance 2, in a group without egress, opened a connection to instance 1, in a group without ingress")
	}
	if got := imdsGet(t, in2.Namespace, "instance-id"); got != in2.ID {
		t.Errorf("instance metadata from a group without egress: %q", got)
	}

	extra := group("extra")
	if _, err := c.AuthorizeSecurityGroupIngress(t.Context(), &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(extra), IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8081), ToPort: aws.Int32(8081),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String(in1.PrivateIP + "/32")}},
		}}}); err != nil {
		t.Fatal(err)
	}
	setGroups(in2.ID, server, extra)
	testenv.EventuallyTrue(t, "port 8081 connects once instance 2's ENI joins a group that allows it", converge, func() bool { return connects(in1.Namespace, p8081) })
	if !connects(in1.Namespace, p8080) {
		t.Errorf("port 8080 no longer connects after adding a group")
	}
}

// TestLostDeviceComesBack moves an ENI's device into a namespace of the
// test's own, as a task does, and deletes that namespace, which destroys
// the device: it comes back on its instance, as a physical ENI returns to
// its host.
func TestLostDeviceComesBack(t *testing.T) {
	v := up(t, tagDatapath)
	c := v.EC2()
	in1 := v.Instances[0]
	eni := createENI(t, c, v.Subnets[0].ID)
	attachENI(t, c, *eni.NetworkInterfaceId, in1.ID, 1)
	dev := waitDevice(t, in1.Namespace, *eni.MacAddress)
	waitAttachment(t, c, *eni.NetworkInterfaceId, "attached")

	// The namespace is made by another process: one made in this process
	// with netops.CreateNamedNS may stay alive after it is deleted, held by
	// the thread that created it when that thread is the main thread, which
	// Go never ends; the device would then never be destroyed.
	taskName := testenv.NSPrefix + nsTag + "-" + testenv.RandomHex(4)
	testenv.Run(t, "ip", "netns", "add", taskName)
	t.Cleanup(func() { _ = netops.DeleteNamedNS(taskName) })
	task, err := ns.GetNS(netops.NamedNSPath(taskName))
	if err != nil {
		t.Fatal(err)
	}
	var moved netlink.Link
	inNS(t, in1.Namespace, func() error {
		var err error
		moved, err = netops.MoveLink(dev, task, "eth0")
		return err
	})
	if deviceIn(t, taskName, *eni.MacAddress) == nil || deviceIn(t, in1.Namespace, *eni.MacAddress) != nil {
		t.Fatalf("the device %s did not move from the instance into %s", moved.Attrs().Name, taskName)
	}
	task.Close()
	if err := netops.DeleteNamedNS(taskName); err != nil {
		t.Fatal(err)
	}

	back := waitDevice(t, in1.Namespace, *eni.MacAddress)
	if back.Attrs().Name != "eth1" {
		t.Errorf("the ENI came back as %s, want eth1", back.Attrs().Name)
	}
	if s := attachmentStatus(describeENI(t, c, *eni.NetworkInterfaceId)); s != "attached" {
		t.Errorf("attachment after the device came back: %q, want attached", s)
	}
}
