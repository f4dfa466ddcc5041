package vpc

import (
	"net/netip"
	"os"
	"sync"
	"testing"
)

func TestUnsavedChangeIsNotApplied(t *testing.T) {
	w := newWorld(t)
	before := w.m.Snapshot()
	// With the state directory gone, the save fails; the change must not
	// be visible, as it would be lost on restart.
	if err := os.RemoveAll(w.dir); err != nil {
		t.Fatal(err)
	}
	_, err := w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: w.subnet.ID})
	if err == nil {
		t.Fatal("a change that could not be saved succeeded")
	}
	if _, isEC2 := err.(*Error); isEC2 {
		t.Fatalf("a failed save reported as an EC2 refusal: %v", err)
	}
	after := w.m.Snapshot()
	if after.Revision != before.Revision || len(after.NetworkInterfaces) != len(before.NetworkInterfaces) {
		t.Fatalf("unsaved change applied: revision %d -> %d, %d -> %d ENIs", before.Revision, after.Revision, len(before.NetworkInterfaces), len(after.NetworkInterfaces))
	}
}

func TestConcurrentAllocationsNeverCollide(t *testing.T) {
	w := newWorld(t)
	big, err := w.m.CreateSubnet(SubnetSpec{VPCID: w.vpc.ID, CIDR: netip.MustParsePrefix("10.0.16.0/20")})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 6
	var wg sync.WaitGroup
	results := make(chan NetworkInterface, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				n, err := w.m.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: big.ID, SecondaryCount: 1, IPv4PrefixCount: 1})
				if err != nil {
					t.Error(err)
					return
				}
				results <- n
			}
		})
	}
	wg.Wait()
	close(results)
	seen := map[netip.Addr]string{}
	prefixes := map[netip.Prefix]bool{}
	for n := range results {
		for _, p := range n.PrivateIPs {
			if other, dup := seen[p.Address]; dup {
				t.Fatalf("%s given to %s and %s", p.Address, other, n.ID)
			}
			seen[p.Address] = n.ID
		}
		for _, p := range n.IPv4Prefixes {
			if prefixes[p] {
				t.Fatalf("prefix %s given twice", p)
			}
			prefixes[p] = true
			if _, inside := seen[p.Addr()]; inside {
				t.Fatalf("prefix %s overlaps an address", p)
			}
		}
	}
	if len(prefixes) != workers*each {
		t.Fatalf("%d prefixes for %d ENIs", len(prefixes), workers*each)
	}
}

func TestTerminateDeletesOnTermination(t *testing.T) {
	w := newWorld(t)
	extra := w.eni(t, CreateNetworkInterfaceInput{})
	att, err := w.m.AttachNetworkInterface(AttachInput{NetworkInterfaceID: extra.ID, InstanceID: w.instance.ID, DeviceIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.m.TerminateInstance(w.instance.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := w.m.NetworkInterface(w.instance.PrimaryENIID); !IsError(err, CodeInvalidNetworkInterfaceIDNotFound) {
		t.Errorf("primary ENI (DeleteOnTermination) after termination: %v", err)
	}
	if got, err := w.m.NetworkInterface(extra.ID); err != nil || got.Attachment != nil || got.Status != StatusAvailable {
		t.Errorf("secondary ENI after termination: %+v %v", got, err)
	}
	if inst, _ := w.m.Instance(w.instance.ID); inst.State != "terminated" {
		t.Errorf("instance state %q", inst.State)
	}
	_ = att
}
