package cloud_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestNodeENI drives the calls the node agent makes for a secondary ENI,
// through the real SDK against a local VPC: create it tagged, attach it,
// mark it delete-on-termination, give it addresses and /28 prefixes, and
// see them in EC2 and in the instance's own metadata, which lags EC2.
func TestNodeENI(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1", "--instance-type", "m5.large")
	c := newClient(v, cloud.DefaultRetry)
	ctx := ctxFor(t, 3*time.Minute)
	inst := v.Instances[0]
	sub, err := c.DescribeSubnet(ctx, inst.SubnetID)
	if err != nil {
		t.Fatal(err)
	}

	created := time.Now().Truncate(time.Second)
	eni, err := c.CreateENI(ctx, cloud.CreateENIInput{
		SubnetID: sub.ID, Description: "vpcnet node ENI", Tags: cloud.NodeENITags(inst.ID, "hc-cluster", created)})
	if err != nil {
		t.Fatal(err)
	}
	if eni.Tags[cloud.TagNode] != inst.ID || eni.Tags[cloud.TagCluster] != "hc-cluster" || eni.Description != "vpcnet node ENI" || eni.VPCID != v.VPCID {
		t.Errorf("created ENI: tags %v, description %q, VPC %s; want node %s, cluster hc-cluster, VPC %s", eni.Tags, eni.Description, eni.VPCID, inst.ID, v.VPCID)
	}
	if at, ok := eni.CreatedAt(); !ok || !at.Equal(created) {
		t.Errorf("CreatedAt = %v, %v; want %v from tag %q", at, ok, created, eni.Tags[cloud.TagCreatedAt])
	}

	// The agent picks the device index itself: 2, leaving 1 free.
	att, err := c.AttachENIAt(ctx, eni.ID, inst.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, converge, func() error {
		if eni, err = c.DescribeENI(ctx, eni.ID); err != nil || !eni.Attached {
			return fmt.Errorf("attachment never happened: %+v %v", eni, err)
		}
		return nil
	})
	if err := c.SetDeleteOnTermination(ctx, eni.ID, att, true); err != nil {
		t.Fatal(err)
	}
	if eni, err = c.DescribeENI(ctx, eni.ID); err != nil {
		t.Fatal(err)
	}
	if eni.AttachmentID != att || eni.InstanceID != inst.ID || eni.DeviceIndex != 2 || eni.AttachmentStatus != "attached" ||
		!eni.DeleteOnTermination || eni.AttachTime.IsZero() || eni.Status != "in-use" {
		t.Errorf("attached ENI: %+v; want attachment %s to %s at index 2, attached, delete on termination, an attach time, in-use", eni, att, inst.ID)
	}
	enis, err := c.InstanceENIs(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	var primary cloud.ENI
	indexes := map[string]int{}
	for _, e := range enis {
		indexes[e.ID] = e.DeviceIndex
		if e.DeviceIndex == 0 {
			primary = e
		}
	}
	if len(enis) != 2 || indexes[eni.ID] != 2 || primary.ID == "" {
		t.Fatalf("InstanceENIs = %v; want the primary at 0 and %s at 2", indexes, eni.ID)
	}

	// Addresses and prefixes, each form of request.
	byCount, err := c.AssignPrivateIPAddresses(ctx, eni.ID, cloud.AddressRequest{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	explicit := nth(sub.CIDR, 200)
	byAddr, err := c.AssignPrivateIPAddresses(ctx, eni.ID, cloud.AddressRequest{Addresses: []netip.Addr{explicit}})
	if err != nil {
		t.Fatal(err)
	}
	byPrefixCount, err := c.AssignPrivateIPAddresses(ctx, eni.ID, cloud.AddressRequest{PrefixCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	explicitPrefix := netip.PrefixFrom(nth(sub.CIDR, 512), cloud.PrefixBits)
	byPrefix, err := c.AssignPrivateIPAddresses(ctx, eni.ID, cloud.AddressRequest{Prefixes: []netip.Prefix{explicitPrefix}})
	if err != nil {
		t.Fatal(err)
	}
	if len(byCount.Addresses) != 2 || len(byCount.Prefixes) != 0 || !slices.Equal(byAddr.Addresses, []netip.Addr{explicit}) ||
		len(byPrefixCount.Prefixes) != 1 || len(byPrefixCount.Addresses) != 0 || !slices.Equal(byPrefix.Prefixes, []netip.Prefix{explicitPrefix}) {
		t.Fatalf("assigned: by count %v, by address %v, by prefix count %v, by prefix %v", byCount, byAddr, byPrefixCount, byPrefix)
	}
	for _, a := range append(byCount.Addresses, byPrefixCount.Prefixes[0].Addr()) {
		if !sub.CIDR.Contains(a) {
			t.Errorf("EC2 assigned %v outside the subnet %v", a, sub.CIDR)
		}
	}
	if p := byPrefixCount.Prefixes[0]; p.Bits() != cloud.PrefixBits || p.Masked() != p {
		t.Errorf("EC2 delegated %v, want an aligned /28", p)
	}
	wantV4 := append([]netip.Addr{eni.IPv4[0]}, append(byCount.Addresses, explicit)...)
	wantPrefixes := []netip.Prefix{byPrefixCount.Prefixes[0], explicitPrefix}
	if eni, err = c.DescribeENI(ctx, eni.ID); err != nil {
		t.Fatal(err)
	}
	if !sameAddrs(eni.IPv4, wantV4) || !samePrefixes(eni.IPv4Prefixes, wantPrefixes) {
		t.Fatalf("EC2 says the ENI has %v and %v; want %v and %v", eni.IPv4, eni.IPv4Prefixes, wantV4, wantPrefixes)
	}

	// The instance sees the same in its metadata, once metadata caught up.
	mac := eni.MAC.String()
	var report metadataReport
	testenv.Eventually(t, converge, func() error {
		report = onInstance(t, v, 1)
		if im, ok := report.interfaceOf(mac); !ok || !sameAddrs(im.LocalIPv4s, wantV4) || !samePrefixes(im.IPv4Prefixes, wantPrefixes) {
			return fmt.Errorf("metadata showing the assignments never happened: %+v", report.Interfaces)
		}
		return nil
	})
	id := report.Identity
	if id.InstanceID != inst.ID || id.InstanceType != "m5.large" || id.Region != v.Region || id.Zone != inst.Zone ||
		id.PrimaryMAC != primary.MAC.String() || id.PrivateIPv4.String() != inst.PrivateIP {
		t.Errorf("identity from metadata %+v; want %s, m5.large, %s, %s, MAC %s, %s", id, inst.ID, v.Region, inst.Zone, primary.MAC, inst.PrivateIP)
	}
	if !slices.Contains(report.ENIIDs, eni.ID) || !slices.Contains(report.ENIIDs, primary.ID) || len(report.ENIIDs) != 2 {
		t.Errorf("the instance's own EC2 listing: %v; want %s and %s", report.ENIIDs, primary.ID, eni.ID)
	}
	if len(report.Interfaces) != 2 || report.Interfaces[0].MAC.String() != id.PrimaryMAC {
		t.Fatalf("metadata lists %+v; want the primary ENI first, then %s", report.Interfaces, mac)
	}
	first, second := report.Interfaces[0], report.Interfaces[1]
	vpcCIDR := netip.MustParsePrefix("10.0.0.0/16")
	if first.DeviceNumber != 0 || first.InterfaceID != primary.ID || len(first.IPv4Prefixes) != 0 ||
		!sameAddrs(first.LocalIPv4s, primary.IPv4) {
		t.Errorf("primary ENI in metadata: %+v; want device 0, %s, addresses %v and no prefixes", first, primary.ID, primary.IPv4)
	}
	if second.DeviceNumber != 2 || second.InterfaceID != eni.ID || second.LocalIPv4s[0] != eni.IPv4[0] || second.SubnetID != sub.ID ||
		second.SubnetCIDR != sub.CIDR || second.VPCID != v.VPCID || !slices.Equal(second.VPCCIDRs, []netip.Prefix{vpcCIDR}) ||
		!slices.Equal(second.SecurityGroupIDs, eni.Groups) {
		t.Errorf("secondary ENI in metadata: %+v; want device 2, %s, primary %v first, subnet %s %v, VPC %s %v, groups %v",
			second, eni.ID, eni.IPv4[0], sub.ID, sub.CIDR, v.VPCID, vpcCIDR, eni.Groups)
	}

	// Metadata lags EC2: with a long lag, what was just unassigned is gone
	// from EC2 but still in metadata. An agent must go by EC2.
	setFaults(t, v, `{"metadataLag":"1h"}`)
	gone, goneP := byCount.Addresses[0], byPrefixCount.Prefixes[0]
	if err := c.UnassignPrivateIPAddresses(ctx, eni.ID, []netip.Addr{gone}, []netip.Prefix{goneP}); err != nil {
		t.Fatal(err)
	}
	if eni, err = c.DescribeENI(ctx, eni.ID); err != nil {
		t.Fatal(err)
	}
	wantV4 = slices.DeleteFunc(wantV4, func(a netip.Addr) bool { return a == gone })
	wantPrefixes = []netip.Prefix{explicitPrefix}
	if !sameAddrs(eni.IPv4, wantV4) || !samePrefixes(eni.IPv4Prefixes, wantPrefixes) {
		t.Fatalf("after unassign EC2 says %v and %v; want %v and %v", eni.IPv4, eni.IPv4Prefixes, wantV4, wantPrefixes)
	}
	lagged, _ := onInstance(t, v, 1).interfaceOf(mac)
	if !slices.Contains(lagged.LocalIPv4s, gone) || !slices.Contains(lagged.IPv4Prefixes, goneP) {
		t.Errorf("lagging metadata already shows the unassignment: %+v", lagged)
	}
	setFaults(t, v, "")
	testenv.Eventually(t, converge, func() error {
		if im, ok := onInstance(t, v, 1).interfaceOf(mac); !ok || !sameAddrs(im.LocalIPv4s, wantV4) || !samePrefixes(im.IPv4Prefixes, wantPrefixes) {
			return fmt.Errorf("metadata catching up with the unassignment never happened: %+v", im)
		}
		return nil
	})

	// Bad requests are refused before anything is sent; the ENI is as it was.
	if _, err := c.AssignPrivateIPAddresses(ctx, eni.ID, cloud.AddressRequest{Count: 1, PrefixCount: 1}); err == nil || cloud.APIErrorCode(err) != "" {
		t.Errorf("a count of addresses and of prefixes in one call: %v; want a local refusal", err)
	}
	if err := c.UnassignPrivateIPAddresses(ctx, eni.ID, nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}); err == nil || cloud.APIErrorCode(err) != "" {
		t.Errorf("unassigning a /24 as a prefix: %v; want a local refusal", err)
	}
	if after, err := c.DescribeENI(ctx, eni.ID); err != nil || !sameAddrs(after.IPv4, wantV4) || !samePrefixes(after.IPv4Prefixes, wantPrefixes) {
		t.Errorf("after refused requests: %+v, %v", after, err)
	}
}

// TestLeakedENIs lists the ENIs a node agent would clean up: available,
// tagged by a node, in the VPC; over several pages.
func TestLeakedENIs(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1")
	c := newClient(v, cloud.DefaultRetry)
	cloud.SetPageSize(c, 5) // EC2's smallest page
	ctx := ctxFor(t, 2*time.Minute)
	inst := v.Instances[0]
	var leaked []string
	for i := range 7 {
		// Tagged for this node and for one that is gone: both are leaks.
		node := inst.ID
		if i%2 == 1 {
			node = "i-0000000000000dead"
		}
		e, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID, Tags: cloud.NodeENITags(node, "hc-cluster", time.Now())})
		if err != nil {
			t.Fatal(err)
		}
		leaked = append(leaked, e.ID)
	}
	// Not leaks: an ENI of someone else, and a vpcnet ENI in use.
	if _, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID, Tags: map[string]string{"owner": "someone"}}); err != nil {
		t.Fatal(err)
	}
	inUse, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID, Tags: cloud.NodeENITags(inst.ID, "hc-cluster", time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.AttachENI(ctx, inUse.ID, inst.ID); err != nil {
		t.Fatal(err)
	}
	got, err := c.LeakedENIs(ctx, v.VPCID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
		if _, ok := e.CreatedAt(); !ok || e.Status != "available" {
			t.Errorf("leaked ENI %s: status %s, tags %v", e.ID, e.Status, e.Tags)
		}
	}
	slices.Sort(ids)
	slices.Sort(leaked)
	if !slices.Equal(ids, leaked) {
		t.Errorf("LeakedENIs = %v; want the 7 tagged, available ENIs %v", ids, leaked)
	}
	if got, err := c.LeakedENIs(ctx, "vpc-00000000000000000"); err != nil || len(got) != 0 {
		t.Errorf("LeakedENIs of another VPC = %v, %v; want none", got, err)
	}
}

// sameAddrs: the same primary first, and the same others in any order.
func sameAddrs(got, want []netip.Addr) bool {
	if len(got) != len(want) {
		return false
	}
	return len(got) == 0 || got[0] == want[0] && slices.Equal(sortedAddrs(got), sortedAddrs(want))
}

func sortedAddrs(a []netip.Addr) []netip.Addr {
	a = slices.Clone(a)
	slices.SortFunc(a, netip.Addr.Compare)
	return a
}

func samePrefixes(got, want []netip.Prefix) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	cmp := func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	return slices.Equal(got, want)
}
