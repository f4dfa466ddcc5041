package vpc

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// world is a local VPC as `vpcnet local up` builds it: one VPC, a subnet in
// each of two zones, one t3.medium instance in the first.
type world struct {
	m        *Model
	dir      string
	vpc      VPC
	subnet   Subnet
	subnetB  Subnet
	instance Instance
	clock    *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{dir: t.TempDir(), clock: &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	w.open(t)
	var err error
	if w.vpc, err = w.m.CreateVPC(VPCSpec{Tags: Tags{"Name": "local"}}); err != nil {
		t.Fatal(err)
	}
	if w.subnet, err = w.m.CreateSubnet(SubnetSpec{VPCID: w.vpc.ID, CIDR: netip.MustParsePrefix("10.0.1.0/24"), AvailabilityZone: "us-east-1a"}); err != nil {
		t.Fatal(err)
	}
	if w.subnetB, err = w.m.CreateSubnet(SubnetSpec{VPCID: w.vpc.ID, CIDR: netip.MustParsePrefix("10.0.2.0/24"), AvailabilityZone: "us-east-1b"}); err != nil {
		t.Fatal(err)
	}
	if w.instance, err = w.m.RunInstance(InstanceSpec{Type: "t3.medium", SubnetID: w.subnet.ID, RoleName: "node"}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) open(t testing.TB) {
	t.Helper()
	m, err := Open(w.dir, WithClock(w.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	w.m = m
	t.Cleanup(func() { m.Close() })
}

func (w *world) eni(t testing.TB, in CreateNetworkInterfaceInput) NetworkInterface {
	t.Helper()
	if in.SubnetID == "" {
		in.SubnetID = w.subnet.ID
	}
	n, err := w.m.CreateNetworkInterface(in)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if !IsError(err, code) {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

func TestBootstrap(t *testing.T) {
	w := newWorld(t)
	if w.vpc.CIDR != DefaultVPCCIDR {
		t.Errorf("VPC CIDR %s, want the default %s", w.vpc.CIDR, DefaultVPCCIDR)
	}
	ula := netip.MustParsePrefix("fd00::/8")
	if w.vpc.IPv6CIDR.Bits() != 56 || !ula.Contains(w.vpc.IPv6CIDR.Addr()) {
		t.Errorf("VPC IPv6 block %s is not a ULA /56", w.vpc.IPv6CIDR)
	}
	if w.subnet.IPv6CIDR.Bits() != 64 || !w.vpc.IPv6CIDR.Contains(w.subnet.IPv6CIDR.Addr()) || w.subnet.IPv6CIDR == w.subnetB.IPv6CIDR {
		t.Errorf("subnet IPv6 blocks %s and %s are not distinct /64s of %s", w.subnet.IPv6CIDR, w.subnetB.IPv6CIDR, w.vpc.IPv6CIDR)
	}
	primary, err := w.m.NetworkInterface(w.instance.PrimaryENIID)
	if err != nil {
		t.Fatal(err)
	}
	if primary.Attachment == nil || primary.Attachment.DeviceIndex != 0 || primary.Attachment.Status != AttachmentAttached || !primary.Attachment.DeleteOnTermination {
		t.Errorf("primary ENI attachment %+v, want attached at 0 with DeleteOnTermination", primary.Attachment)
	}
	if got := primary.PrimaryIP().String(); got != "10.0.1.4" {
		t.Errorf("primary address %s, want the first usable 10.0.1.4", got)
	}
	groups, _, err := w.m.DescribeSecurityGroups(DescribeInput{}, []string{"default"})
	if err != nil || len(groups) != 1 {
		t.Fatalf("default group: %v %v", groups, err)
	}
	g := groups[0]
	if len(g.Ingress) != 1 || g.Ingress[0].GroupID != g.ID || g.Ingress[0].Protocol != "-1" {
		t.Errorf("default group ingress %+v, want all traffic from itself", g.Ingress)
	}
	if len(g.Egress) != 2 || g.Egress[0].CIDR.String() != "0.0.0.0/0" || g.Egress[1].CIDR.String() != "::/0" {
		t.Errorf("default group egress %+v, want everything", g.Egress)
	}
	if !slices.Equal(primary.Groups, []string{g.ID}) {
		t.Errorf("primary ENI groups %v, want the default group", primary.Groups)
	}
	if _, err := w.m.CreateSubnet(SubnetSpec{VPCID: w.vpc.ID, CIDR: netip.MustParsePrefix("10.0.1.128/25")}); !IsError(err, CodeInvalidSubnetConflict) {
		t.Errorf("overlapping subnet: %v", err)
	}
	if _, err := w.m.RunInstance(InstanceSpec{Type: "x9.huge", SubnetID: w.subnet.ID}); !IsError(err, CodeInvalidParameterValue) {
		t.Errorf("unknown instance type: %v", err)
	}
}

func TestMACsAndIDsAreUnique(t *testing.T) {
	w := newWorld(t)
	seen := map[string]bool{}
	for range 20 {
		n := w.eni(t, CreateNetworkInterfaceInput{})
		hw := n.MAC
		if seen[hw] || seen[n.ID] {
			t.Fatalf("duplicate %s or %s", hw, n.ID)
		}
		seen[hw], seen[n.ID] = true, true
		var first byte
		fmt.Sscanf(hw[:2], "%x", &first)
		if first&0x02 == 0 || first&0x01 != 0 {
			t.Fatalf("MAC %s is not locally administered unicast", hw)
		}
		if len(n.ID) != len("eni-")+17 {
			t.Fatalf("ID %s does not have EC2's 17 hex digits", n.ID)
		}
	}
}

func TestAttachmentLifecycle(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{Description: "task"})
	att, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: n.ID, InstanceID: w.instance.ID, DeviceIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	status := func() (string, string) {
		got, err := w.m.NetworkInterface(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attachment == nil {
			return got.Status, ""
		}
		return got.Status, got.Attachment.Status
	}
	steps := []struct {
		name                string
		do                  func() error
		wantENI, wantAttach string
	}{
		{"attach is asynchronous", func() error { return nil }, StatusInUse, AttachmentAttaching},
		{"delete while attaching is refused", func() error { wantCode(t, w.m.DeleteNetworkInterface(n.ID), CodeInvalidParameterValue); return nil }, StatusInUse, AttachmentAttaching},
		{"complete attach", func() error { return w.m.CompleteAttach(att) }, StatusInUse, AttachmentAttached},
		{"complete attach again is a no-op", func() error { return w.m.CompleteAttach(att) }, StatusInUse, AttachmentAttached},
		{"detach is asynchronous", func() error { return w.m.DetachNetworkInterface(att, false) }, StatusInUse, AttachmentDetaching},
		{"delete while detaching is refused", func() error { wantCode(t, w.m.DeleteNetworkInterface(n.ID), CodeInvalidParameterValue); return nil }, StatusInUse, AttachmentDetaching},
		{"complete detach frees the ENI", func() error { return w.m.CompleteDetach(att) }, StatusAvailable, ""},
		{"complete detach again is a no-op", func() error { return w.m.CompleteDetach(att) }, StatusAvailable, ""},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if e, a := status(); e != s.wantENI || a != s.wantAttach {
			t.Fatalf("%s: ENI %q attachment %q, want %q %q", s.name, e, a, s.wantENI, s.wantAttach)
		}
	}
	if err := w.m.DeleteNetworkInterface(n.ID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.m.DeleteNetworkInterface(n.ID), CodeInvalidNetworkInterfaceIDNotFound)
}

func TestAttachRules(t *testing.T) {
	w := newWorld(t)
	a := w.eni(t, CreateNetworkInterfaceInput{})
	b := w.eni(t, CreateNetworkInterfaceInput{})
	c := w.eni(t, CreateNetworkInterfaceInput{})
	other := w.eni(t, CreateNetworkInterfaceInput{SubnetID: w.subnetB.ID})
	attach := func(id string, dev int32) (string, error) {
		return w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: id, InstanceID: w.instance.ID, DeviceIndex: dev})
	}
	if _, err := attach(a.ID, 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		eni  string
		dev  int32
		code string
	}{
		{"an in-use ENI", a.ID, 2, CodeInvalidNetworkInterfaceInUse},
		{"a device index in use", b.ID, 1, CodeInvalidParameterValue},
		{"the primary's device index", b.ID, 0, CodeInvalidParameterValue},
		{"another zone", other.ID, 2, CodeInvalidParameterCombination},
		{"an unknown ENI", "eni-00000000000000000", 2, CodeInvalidNetworkInterfaceIDNotFound},
		{"a malformed ENI ID", "nope", 2, CodeInvalidNetworkInterfaceIDMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attach(tc.eni, tc.dev)
			wantCode(t, err, tc.code)
		})
	}
	if _, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: b.ID, InstanceID: "i-00000000000000000", DeviceIndex: 2}); !IsError(err, CodeInvalidInstanceIDNotFound) {
		t.Errorf("unknown instance: %v", err)
	}
	// t3.medium takes 3 ENIs: the primary, a, and one more.
	if _, err := attach(b.ID, 2); err != nil {
		t.Fatal(err)
	}
	_, err := attach(c.ID, 3)
	wantCode(t, err, CodeAttachmentLimitExceeded)
	primary, _ := w.m.NetworkInterface(w.instance.PrimaryENIID)
	wantCode(t, w.m.DetachNetworkInterface(primary.Attachment.ID, true), CodeOperationNotPermitted)
	wantCode(t, w.m.DetachNetworkInterface("eni-attach-00000000000000000", false), CodeInvalidAttachmentIDNotFound)
}

func TestAddressLimits(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{})
	att, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: n.ID, InstanceID: w.instance.ID, DeviceIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.m.CompleteAttach(att); err != nil {
		t.Fatal(err)
	}
	// t3.medium: 6 IPv4 slots per ENI. The primary takes one; a /28 takes
	// one slot, as on Nitro.
	got, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: n.ID, Count: 3})
	if err != nil || len(got.Addresses) != 3 {
		t.Fatalf("assign 3: %v %v", got, err)
	}
	pre, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: n.ID, PrefixCount: 1})
	if err != nil || len(pre.Prefixes) != 1 {
		t.Fatalf("assign a prefix: %v %v", pre, err)
	}
	if p := pre.Prefixes[0]; p.Bits() != 28 || p != p.Masked() {
		t.Errorf("prefix %s is not an aligned /28", p)
	}
	if _, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: n.ID, Count: 2}); !IsError(err, CodePrivateIPAddressLimitExceeded) {
		t.Fatalf("7th slot: %v", err)
	}
	if _, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: n.ID, Count: 1}); err != nil {
		t.Fatalf("6th slot: %v", err)
	}
	// The subnet accounts for the prefix's 16 addresses.
	subnets, _, err := w.m.DescribeSubnets(DescribeInput{IDs: []string{w.subnet.ID}})
	if err != nil {
		t.Fatal(err)
	}
	// primary ENI (1) + this ENI's 5 addresses + 16 for the prefix
	if want := 251 - 1 - 5 - 16; subnets[0].AvailableIPAddressCount != want {
		t.Errorf("AvailableIpAddressCount %d, want %d", subnets[0].AvailableIPAddressCount, want)
	}
	primaryIP := n.PrimaryIP()
	wantCode(t, w.m.UnassignPrivateIPAddresses(n.ID, []netip.Addr{primaryIP}, nil), CodeInvalidParameterValue)
	wantCode(t, w.m.UnassignPrivateIPAddresses(n.ID, []netip.Addr{netip.MustParseAddr("10.0.1.200")}, nil), CodeInvalidParameterValue)
	if err := w.m.UnassignPrivateIPAddresses(n.ID, got.Addresses[:1], pre.Prefixes); err != nil {
		t.Fatal(err)
	}
	_, err = w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: n.ID, Count: 1, PrefixCount: 1})
	wantCode(t, err, CodeInvalidParameterCombination)
}

func TestReassignment(t *testing.T) {
	w := newWorld(t)
	a := w.eni(t, CreateNetworkInterfaceInput{SecondaryCount: 1})
	b := w.eni(t, CreateNetworkInterfaceInput{})
	moving := a.PrivateIPs[1].Address
	_, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: b.ID, Addresses: []netip.Addr{moving}})
	wantCode(t, err, CodeInvalidIPAddressInUse)
	if _, err := w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: b.ID, Addresses: []netip.Addr{moving}, AllowReassignment: true}); err != nil {
		t.Fatal(err)
	}
	owner, ok := w.m.NetworkInterfaceByAddress(moving)
	if !ok || owner.ID != b.ID {
		t.Fatalf("%s belongs to %s after reassignment, want %s", moving, owner.ID, b.ID)
	}
	if a2, _ := w.m.NetworkInterface(a.ID); len(a2.PrivateIPs) != 1 {
		t.Errorf("source ENI still has %v", a2.PrivateIPs)
	}
	_, err = w.m.AssignPrivateIPAddresses(AssignPrivateInput{NetworkInterfaceID: b.ID, Addresses: []netip.Addr{a.PrimaryIP()}, AllowReassignment: true})
	wantCode(t, err, CodeInvalidIPAddressInUse)
}

func TestCreateNetworkInterfaceAddresses(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name string
		in   CreateNetworkInterfaceInput
		code string
	}{
		{"explicit primary", CreateNetworkInterfaceInput{PrivateIPs: []netip.Addr{netip.MustParseAddr("10.0.1.50")}}, ""},
		{"address in use", CreateNetworkInterfaceInput{PrivateIPs: []netip.Addr{netip.MustParseAddr("10.0.1.50")}}, CodeInvalidIPAddressInUse},
		{"reserved address", CreateNetworkInterfaceInput{PrivateIPs: []netip.Addr{netip.MustParseAddr("10.0.1.1")}}, CodeInvalidParameterValue},
		{"outside the subnet", CreateNetworkInterfaceInput{PrivateIPs: []netip.Addr{netip.MustParseAddr("10.0.9.9")}}, CodeInvalidParameterValue},
		{"unknown subnet", CreateNetworkInterfaceInput{SubnetID: "subnet-00000000000000000"}, CodeInvalidSubnetIDNotFound},
		{"unknown group", CreateNetworkInterfaceInput{Groups: []string{"sg-00000000000000000"}}, CodeInvalidGroupNotFound},
		{"misaligned prefix", CreateNetworkInterfaceInput{IPv4Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.24/28")}}, CodeInvalidParameterValue},
		{"count and list", CreateNetworkInterfaceInput{IPv6Count: 1, IPv6Addresses: []netip.Addr{netip.MustParseAddr("fd00::1")}}, CodeInvalidParameterCombination},
		{"too many addresses", CreateNetworkInterfaceInput{SecondaryCount: 50}, CodePrivateIPAddressLimitExceeded},
		{"aws: tag", CreateNetworkInterfaceInput{Tags: Tags{"aws:x": "y"}}, CodeInvalidParameterValue},
		{"everything", CreateNetworkInterfaceInput{SecondaryCount: 2, IPv4PrefixCount: 1, IPv6Count: 2, IPv6PrefixCount: 1, Tags: Tags{"k": "v"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.SubnetID == "" {
				tc.in.SubnetID = w.subnet.ID
			}
			n, err := w.m.CreateNetworkInterface(tc.in)
			if tc.code != "" {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(n.PrivateIPs) != 1+tc.in.SecondaryCount || len(n.IPv4Prefixes) != tc.in.IPv4PrefixCount ||
				len(n.IPv6Addresses) != tc.in.IPv6Count || len(n.IPv6Prefixes) != tc.in.IPv6PrefixCount {
				t.Fatalf("created %+v", n)
			}
			for _, a := range n.IPv6Addresses {
				if !w.subnet.IPv6CIDR.Contains(a) {
					t.Errorf("IPv6 %s outside the subnet's %s", a, w.subnet.IPv6CIDR)
				}
			}
		})
	}
}

func TestSubnetExhaustion(t *testing.T) {
	w := newWorld(t)
	small, err := w.m.CreateSubnet(SubnetSpec{VPCID: w.vpc.ID, CIDR: netip.MustParsePrefix("10.0.3.0/28")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: small.ID, IPv4PrefixCount: 1})
	wantCode(t, err, CodeInsufficientCidrBlocks)
	if _, err := w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: small.ID, SecondaryCount: 10}); err != nil {
		t.Fatalf("11 addresses in a /28: %v", err)
	}
	_, err = w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: small.ID})
	wantCode(t, err, CodeInsufficientFreeAddresses)
}

func TestFilters(t *testing.T) {
	w := newWorld(t)
	tagged := w.eni(t, CreateNetworkInterfaceInput{Description: "task eni", Tags: Tags{"vpcnet:task": "t1"}})
	plain := w.eni(t, CreateNetworkInterfaceInput{SubnetID: w.subnetB.ID})
	att, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: tagged.ID, InstanceID: w.instance.ID, DeviceIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(fs ...Filter) []string {
		t.Helper()
		enis, _, err := w.m.DescribeNetworkInterfaces(DescribeInput{Filters: fs})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range enis {
			out = append(out, n.ID)
		}
		return out
	}
	f := func(name string, values ...string) Filter { return Filter{Name: name, Values: values} }
	for _, tc := range []struct {
		name    string
		filters []Filter
		want    []string
	}{
		{"attachment.instance-id", []Filter{f("attachment.instance-id", w.instance.ID)}, []string{w.instance.PrimaryENIID, tagged.ID}},
		{"status", []Filter{f("status", "available")}, []string{plain.ID}},
		{"subnet-id", []Filter{f("subnet-id", w.subnetB.ID)}, []string{plain.ID}},
		{"tag:KEY", []Filter{f("tag:vpcnet:task", "t1")}, []string{tagged.ID}},
		{"tag-key", []Filter{f("tag-key", "vpcnet:task")}, []string{tagged.ID}},
		{"wildcard description", []Filter{f("description", "task*")}, []string{tagged.ID}},
		{"attachment.status", []Filter{f("attachment.status", "attaching")}, []string{tagged.ID}},
		{"mac-address", []Filter{f("mac-address", plain.MAC)}, []string{plain.ID}},
		{"private-ip-address", []Filter{f("private-ip-address", plain.PrimaryIP().String())}, []string{plain.ID}},
		{"two filters are ANDed", []Filter{f("vpc-id", w.vpc.ID), f("status", "in-use")}, []string{w.instance.PrimaryENIID, tagged.ID}},
		{"values are ORed", []Filter{f("network-interface-id", plain.ID, tagged.ID)}, []string{tagged.ID, plain.ID}},
		{"no match", []Filter{f("tag:vpcnet:task", "t2")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(tc.filters...)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
	_ = att
	_, _, err = w.m.DescribeNetworkInterfaces(DescribeInput{Filters: []Filter{f("colour", "blue")}})
	wantCode(t, err, CodeInvalidParameterValue)
	_, _, err = w.m.DescribeNetworkInterfaces(DescribeInput{IDs: []string{"eni-00000000000000000"}})
	wantCode(t, err, CodeInvalidNetworkInterfaceIDNotFound)
}

func TestPagination(t *testing.T) {
	w := newWorld(t)
	for range 22 {
		w.eni(t, CreateNetworkInterfaceInput{})
	}
	var all []string
	token := ""
	pages := 0
	for {
		page, next, err := w.m.DescribeNetworkInterfaces(DescribeInput{MaxResults: 5, NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page) > 5 {
			t.Fatalf("page of %d with MaxResults 5", len(page))
		}
		for _, n := range page {
			all = append(all, n.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(all) != 23 || pages != 5 || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 23 {
		t.Fatalf("%d ENIs in %d pages: %v", len(all), pages, all)
	}
	for _, tc := range []struct {
		name string
		in   DescribeInput
		code string
	}{
		{"MaxResults below 5", DescribeInput{MaxResults: 4}, CodeInvalidParameterValue},
		{"MaxResults above 1000", DescribeInput{MaxResults: 1001}, CodeInvalidParameterValue},
		{"MaxResults with IDs", DescribeInput{MaxResults: 5, IDs: []string{all[0]}}, CodeInvalidParameterCombination},
		{"garbage token", DescribeInput{MaxResults: 5, NextToken: "!!!"}, CodeInvalidParameterValue},
		{"a token the model did not issue", DescribeInput{MaxResults: 5, NextToken: "ZW5pLTE"}, CodeInvalidParameterValue},
	} {
		_, _, err := w.m.DescribeNetworkInterfaces(tc.in)
		if !IsError(err, tc.code) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
}

func TestTags(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{})
	ids := []string{n.ID, w.instance.ID, w.subnet.ID, w.vpc.ID}
	if err := w.m.CreateTags(ids, Tags{"team": "net", "env": "test"}); err != nil {
		t.Fatal(err)
	}
	st := w.m.Snapshot()
	for _, tags := range []Tags{st.NetworkInterfaces[n.ID].Tags, st.Instances[w.instance.ID].Tags, st.Subnets[w.subnet.ID].Tags, st.VPCs[w.vpc.ID].Tags} {
		if tags["team"] != "net" {
			t.Errorf("tags %v lack team=net", tags)
		}
	}
	wrong := "other"
	if err := w.m.DeleteTags([]string{n.ID}, []TagKey{{Key: "team", Value: &wrong}, {Key: "env"}}); err != nil {
		t.Fatal(err)
	}
	got, _ := w.m.NetworkInterface(n.ID)
	if got.Tags["team"] != "net" || got.Tags["env"] != "" {
		t.Errorf("after deleting env and team=other: %v", got.Tags)
	}
	wantCode(t, w.m.CreateTags([]string{"eni-00000000000000000"}, Tags{"a": "b"}), CodeInvalidNetworkInterfaceIDNotFound)
	wantCode(t, w.m.CreateTags([]string{"bogus-1"}, Tags{"a": "b"}), CodeInvalidID)
	many := Tags{}
	for i := range 50 {
		many[fmt.Sprint("k", i)] = "v"
	}
	wantCode(t, w.m.CreateTags([]string{n.ID}, many), CodeTagLimitExceeded)
}

func TestSecurityGroups(t *testing.T) {
	w := newWorld(t)
	g, err := w.m.CreateSecurityGroup(CreateSecurityGroupInput{Name: "web", Description: "web servers", VPCID: w.vpc.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Ingress) != 0 || len(g.Egress) != 2 {
		t.Errorf("new group: ingress %v egress %v, want none and all", g.Ingress, g.Egress)
	}
	_, err = w.m.CreateSecurityGroup(CreateSecurityGroupInput{Name: "web", Description: "again", VPCID: w.vpc.ID})
	wantCode(t, err, CodeInvalidGroupDuplicate)
	perm := []Permission{{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDRs: []PeerCIDR{{CIDR: netip.MustParsePrefix("10.0.0.0/16")}}, Groups: []PeerGroup{{GroupID: g.ID}}}}
	rules, err := w.m.AuthorizeSecurityGroupRules(g.ID, false, perm)
	if err != nil || len(rules) != 2 || rules[0].ID == "" {
		t.Fatalf("authorize: %v %v", rules, err)
	}
	_, err = w.m.AuthorizeSecurityGroupRules(g.ID, false, perm)
	wantCode(t, err, CodeInvalidPermissionDuplicate)
	_, err = w.m.AuthorizeSecurityGroupRules(g.ID, false, []Permission{{Protocol: "tcp", FromPort: 1, ToPort: 2, Groups: []PeerGroup{{GroupID: "sg-00000000000000000"}}}})
	wantCode(t, err, CodeInvalidGroupNotFound)
	if err := w.m.RevokeSecurityGroupRules(g.ID, false, perm); err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.m.RevokeSecurityGroupRules(g.ID, false, perm), CodeInvalidPermissionNotFound)
	n := w.eni(t, CreateNetworkInterfaceInput{})
	if err := w.m.ModifyNetworkInterfaceAttribute(ModifyNetworkInterfaceInput{NetworkInterfaceID: n.ID, Groups: []string{g.ID}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.m.NetworkInterface(n.ID); !slices.Equal(got.Groups, []string{g.ID}) {
		t.Errorf("groups after modify: %v", got.Groups)
	}
}

func TestModifyNetworkInterfaceAttribute(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{})
	off, desc := false, "renamed"
	if err := w.m.ModifyNetworkInterfaceAttribute(ModifyNetworkInterfaceInput{NetworkInterfaceID: n.ID, SourceDestCheck: &off}); err != nil {
		t.Fatal(err)
	}
	if err := w.m.ModifyNetworkInterfaceAttribute(ModifyNetworkInterfaceInput{NetworkInterfaceID: n.ID, Description: &desc}); err != nil {
		t.Fatal(err)
	}
	got, _ := w.m.NetworkInterface(n.ID)
	if got.SourceDestCheck || got.Description != desc {
		t.Errorf("after modify: sourceDestCheck %v description %q", got.SourceDestCheck, got.Description)
	}
	wantCode(t, w.m.ModifyNetworkInterfaceAttribute(ModifyNetworkInterfaceInput{NetworkInterfaceID: n.ID, SourceDestCheck: &off, Description: &desc}), CodeInvalidParameterCombination)
	keep := false
	primary, _ := w.m.NetworkInterface(w.instance.PrimaryENIID)
	if err := w.m.ModifyNetworkInterfaceAttribute(ModifyNetworkInterfaceInput{NetworkInterfaceID: primary.ID, AttachmentID: primary.Attachment.ID, DeleteOnTermination: &keep}); err != nil {
		t.Fatal(err)
	}
	if err := w.m.TerminateInstance(w.instance.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := w.m.NetworkInterface(primary.ID); err != nil || got.Status != StatusAvailable {
		t.Errorf("primary ENI without DeleteOnTermination after termination: %+v %v", got, err)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{SecondaryCount: 2, IPv4PrefixCount: 1, IPv6Count: 1, Tags: Tags{"k": "v"}})
	att, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: n.ID, InstanceID: w.instance.ID, DeviceIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.m.InstanceCredentials(w.instance.ID); err != nil {
		t.Fatal(err)
	}
	before := w.m.Snapshot()
	if _, err := Open(w.dir); err == nil {
		t.Fatal("a second Open of a locked state directory succeeded")
	}
	w.m.Close()
	w.open(t)
	after := w.m.Snapshot()
	b1, _ := json.Marshal(before)
	b2, _ := json.Marshal(after)
	if string(b1) != string(b2) {
		t.Fatalf("state changed across a restart:\nbefore %s\nafter  %s", b1, b2)
	}
	// Counters survive: the next ENI gets a new ID and MAC.
	m := w.eni(t, CreateNetworkInterfaceInput{})
	if _, clash := before.NetworkInterfaces[m.ID]; clash {
		t.Fatalf("ID %s reused after restart", m.ID)
	}
	for _, old := range before.NetworkInterfaces {
		if old.MAC == m.MAC {
			t.Fatalf("MAC %s reused after restart", m.MAC)
		}
	}
	if err := w.m.CompleteAttach(att); err != nil {
		t.Fatal(err)
	}
}

func TestCredentials(t *testing.T) {
	w := newWorld(t)
	root := w.m.RootCredentials()
	if k, ok := w.m.ResolveAccessKey(root.AccessKeyID); !ok || k.SecretAccessKey != root.SecretAccessKey || k.Expired || k.SessionToken != "" {
		t.Fatalf("root key resolves to %+v %v", k, ok)
	}
	first, err := w.m.InstanceCredentials(w.instance.ID)
	if err != nil {
		t.Fatal(err)
	}
	if first.SessionToken == "" || first.Expiration.Sub(w.clock.Now()) != 6*time.Hour {
		t.Fatalf("role credentials %+v", first)
	}
	again, _ := w.m.InstanceCredentials(w.instance.ID)
	if again.AccessKeyID != first.AccessKeyID {
		t.Error("fresh credentials were replaced")
	}
	w.clock.Advance(5*time.Hour + time.Minute) // within the rotation margin
	rotated, _ := w.m.InstanceCredentials(w.instance.ID)
	if rotated.AccessKeyID == first.AccessKeyID {
		t.Fatal("credentials near expiry were not rotated")
	}
	if k, ok := w.m.ResolveAccessKey(first.AccessKeyID); !ok || k.Expired {
		t.Error("the previous key stopped working before its expiry")
	}
	w.clock.Advance(time.Hour)
	if k, ok := w.m.ResolveAccessKey(first.AccessKeyID); !ok || !k.Expired {
		t.Errorf("the previous key after its expiry: %+v %v", k, ok)
	}
	if k, ok := w.m.ResolveAccessKey(rotated.AccessKeyID); !ok || k.Expired || k.Principal == "" {
		t.Errorf("the rotated key: %+v %v", k, ok)
	}
	norole, err := w.m.RunInstance(InstanceSpec{Type: "m5.large", SubnetID: w.subnet.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.m.InstanceCredentials(norole.ID); err != ErrNoRole {
		t.Errorf("instance without role: %v", err)
	}
}

func TestSubscribeCoalesces(t *testing.T) {
	w := newWorld(t)
	changes, cancel := w.m.Subscribe()
	defer cancel()
	for range 3 {
		w.eni(t, CreateNetworkInterfaceInput{})
	}
	select {
	case <-changes:
	default:
		t.Fatal("no change notification after three changes")
	}
	select {
	case <-changes:
		t.Fatal("three changes were not coalesced into one pending notification")
	default:
	}
	rev := w.m.Snapshot().Revision
	if _, err := w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: "subnet-00000000000000000"}); err == nil {
		t.Fatal("expected an error")
	}
	select {
	case <-changes:
		t.Fatal("a refused change was announced")
	default:
	}
	if w.m.Snapshot().Revision != rev {
		t.Fatal("a refused change moved the revision")
	}
}

func TestLookupByAddress(t *testing.T) {
	w := newWorld(t)
	n := w.eni(t, CreateNetworkInterfaceInput{IPv4PrefixCount: 1, IPv6Count: 1})
	for _, a := range []netip.Addr{n.PrimaryIP(), n.IPv4Prefixes[0].Addr().Next(), n.IPv6Addresses[0]} {
		got, ok := w.m.NetworkInterfaceByAddress(a)
		if !ok || got.ID != n.ID {
			t.Errorf("owner of %s: %s %v, want %s", a, got.ID, ok, n.ID)
		}
	}
	if _, ok := w.m.NetworkInterfaceByAddress(netip.MustParseAddr("10.0.1.250")); ok {
		t.Error("a free address has an owner")
	}
}
