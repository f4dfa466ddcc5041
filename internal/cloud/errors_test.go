package cloud_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

// TestEC2ErrorKinds provokes each refusal the node agent acts on from a
// local VPC and classifies the EC2 error that comes back through the SDK:
// a t3.small (3 ENIs, 4 addresses each) and a /28 subnet, the smallest
// EC2 allows, which holds no free /28 and fills up after 11 addresses.
func TestEC2ErrorKinds(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1", "--instance-type", "t3.small", "--subnets", "10.0.0.0/24,10.0.1.0/28")
	c := newClient(v, cloud.AgentRetryPolicy)
	ctx := ctxFor(t, 2*time.Minute)
	inst := v.Instances[0]
	small := ""
	for _, s := range v.Subnets {
		if s.CIDR == "10.0.1.0/28" {
			small = s.ID
		}
	}
	if small == "" || inst.SubnetID == small {
		t.Fatalf("subnets %+v, instance in %s: want the instance in the /24", v.Subnets, inst.SubnetID)
	}
	kind := func(what string, err error, want cloud.ErrorKind) {
		t.Helper()
		if got := cloud.Classify(err); got != want {
			t.Errorf("%s: %v is %v, want %v", what, err, got, want)
		}
	}

	// Addresses per ENI: a t3.small's ENI takes 4, the primary included;
	// a prefix takes a slot too.
	a, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.AttachENI(ctx, a.ID, inst.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssignPrivateIPAddresses(ctx, a.ID, cloud.AddressRequest{Count: 3}); err != nil {
		t.Fatal(err)
	}
	_, err = c.AssignPrivateIPAddresses(ctx, a.ID, cloud.AddressRequest{Count: 1})
	kind("a fifth address on a t3.small's ENI", err, cloud.KindAddressLimit)
	_, err = c.AssignPrivateIPAddresses(ctx, a.ID, cloud.AddressRequest{PrefixCount: 1})
	kind("a prefix on a full t3.small ENI", err, cloud.KindAddressLimit)

	// ENIs per instance: 3.
	b, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AttachENIAt(ctx, b.ID, inst.ID, 1)
	kind("attaching at a device index in use", err, cloud.KindDeviceIndexTaken)
	if _, _, err := c.AttachENI(ctx, b.ID, inst.ID); err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: inst.SubnetID})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.AttachENI(ctx, d.ID, inst.ID)
	kind("a fourth ENI on a t3.small", err, cloud.KindAttachmentLimit)

	// The /28: no aligned /28 is free in it (the subnet's own reserved
	// addresses are in the only one), and after 11 addresses nothing is.
	e, err := c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: small})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AssignPrivateIPAddresses(ctx, e.ID, cloud.AddressRequest{PrefixCount: 1})
	kind("a prefix from a /28 subnet", err, cloud.KindNoFreePrefix)
	got, err := c.AssignPrivateIPAddresses(ctx, e.ID, cloud.AddressRequest{Count: 10})
	if err != nil || len(got.Addresses) != 10 {
		t.Fatalf("the 10 addresses left in the /28: %v, %v", got, err)
	}
	_, err = c.AssignPrivateIPAddresses(ctx, e.ID, cloud.AddressRequest{Count: 1})
	kind("an address from a full subnet", err, cloud.KindSubnetFull)
	_, err = c.CreateENI(ctx, cloud.CreateENIInput{SubnetID: small})
	kind("an ENI in a full subnet", err, cloud.KindSubnetFull)

	// Addresses taken, outside the subnet, or not there to unassign.
	_, err = c.AssignPrivateIPAddresses(ctx, d.ID, cloud.AddressRequest{Addresses: []netip.Addr{a.IPv4[0]}})
	kind("another ENI's primary address", err, cloud.KindAddressInUse)
	_, err = c.AssignPrivateIPAddresses(ctx, d.ID, cloud.AddressRequest{Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.9")}})
	kind("an address outside the subnet", err, cloud.KindInvalidRequest)
	err = c.UnassignPrivateIPAddresses(ctx, d.ID, []netip.Addr{netip.MustParseAddr("10.0.0.250")}, nil)
	kind("unassigning an address the ENI lacks", err, cloud.KindInvalidRequest)

	// ENIs and attachments that do not exist.
	const missing = "eni-0123456789abcdef0"
	_, err = c.AssignPrivateIPAddresses(ctx, missing, cloud.AddressRequest{Count: 1})
	kind("assigning to a missing ENI", err, cloud.KindENINotFound)
	_, err = c.DescribeENI(ctx, missing)
	kind("describing a missing ENI", err, cloud.KindENINotFound)
	err = c.SetDeleteOnTermination(ctx, a.ID, "eni-attach-0123456789abcdef0", true)
	kind("delete-on-termination of a missing attachment", err, cloud.KindAttachmentNotFound)
	kind("success", nil, cloud.KindNone)

	// Deleting an attached ENI.
	_, err = c.EC2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(a.ID)})
	kind("deleting an attached ENI", err, cloud.KindENIInUse)
}

// TestInstanceLimits reads the limits the pool is sized by, once per type.
func TestInstanceLimits(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1")
	c, sent := countingClient(v, cloud.AgentRetryPolicy)
	ctx := ctxFor(t, time.Minute)
	wants := []cloud.InstanceLimits{
		{Type: "m5.large", ENIs: 3, IPv4PerENI: 10, IPv6PerENI: 10},
		{Type: "m5.xlarge", ENIs: 4, IPv4PerENI: 15, IPv6PerENI: 15},
		{Type: "t3.small", ENIs: 3, IPv4PerENI: 4, IPv6PerENI: 4},
	}
	// Many reconcilers asking at once for each type.
	var wg sync.WaitGroup
	got := make([][]cloud.InstanceLimits, len(wants))
	errs := make([][]error, len(wants))
	for i, want := range wants {
		got[i], errs[i] = make([]cloud.InstanceLimits, 8), make([]error, 8)
		for j := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i][j], errs[i][j] = c.InstanceLimits(ctx, want.Type)
			}()
		}
	}
	wg.Wait()
	for i, want := range wants {
		want.IPv6, want.Hypervisor, want.PrefixDelegation = true, "nitro", true
		want.NetworkCards = []cloud.NetworkCard{{Index: 0, ENIs: want.ENIs}}
		for j := range got[i] {
			if errs[i][j] != nil || fmt.Sprint(got[i][j]) != fmt.Sprint(want) {
				t.Errorf("limits of %s:\n got %+v, %v\nwant %+v", want.Type, got[i][j], errs[i][j], want)
			}
		}
	}
	if n := sent.count("DescribeInstanceTypes"); n != len(wants) {
		t.Errorf("%d DescribeInstanceTypes calls for %d types asked 8 times each; want one a type", n, len(wants))
	}
	_, err := c.InstanceLimits(ctx, "x9.huge")
	if cloud.APIErrorCode(err) != cloud.CodeInvalidInstanceType || cloud.Classify(err) != cloud.KindInvalidRequest {
		t.Errorf("limits of an unknown type: %v", err)
	}

	// Known types come from the cache: with DescribeInstanceTypes failing
	// they still answer, and InstanceENILimit (the task launcher's) too.
	setFaults(t, v, `{"actions":{"DescribeInstanceTypes":{"errorRate":1}}}`)
	if l, err := c.InstanceLimits(ctx, "m5.xlarge"); err != nil || l.ENIs != 4 {
		t.Errorf("cached limits of m5.xlarge: %+v, %v", l, err)
	}
	if n, err := c.InstanceENILimit(ctx, "t3.small"); err != nil || n != 3 {
		t.Errorf("InstanceENILimit(t3.small) = %d, %v; want 3 from the cache", n, err)
	}
	_, err = c.InstanceLimits(ctx, "c5.large")
	if cloud.Classify(err) != cloud.KindServerError {
		t.Errorf("an uncached type while EC2 fails: %v, want a server error", err)
	}
	// A failure is not cached.
	setFaults(t, v, "")
	if l, err := c.InstanceLimits(ctx, "c5.large"); err != nil || l.ENIs != 3 {
		t.Errorf("c5.large once EC2 answers: %+v, %v", l, err)
	}
}

// TestRetryPoliciesAgainstEC2 shows what each policy does when EC2
// throttles or fails every call, counting the attempts in the call's own
// record of EC2 errors.
func TestRetryPoliciesAgainstEC2(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1")
	agent := newClient(v, cloud.AgentRetryPolicy)
	task := newClient(v, cloud.TaskRetryPolicy)
	subnet := v.Instances[0].SubnetID
	setFaults(t, v, `{"actions":{"DescribeSubnets":{"throttleRate":1},"DescribeInstanceTypes":{"errorRate":1,"errorCode":"InternalError"}}}`)

	// The agent: throttling comes back at once, for its own backoff.
	ctx, rec := cloud.WithAPIErrors(ctxFor(t, time.Minute))
	_, err := agent.DescribeSubnet(ctx, subnet)
	if !cloud.IsThrottled(err) || rec.Failures() != 1 {
		t.Errorf("agent, throttled: %v after %d attempts; want RequestLimitExceeded after 1", err, rec.Failures())
	}
	// An internal error is retried, twice.
	ctx, rec = cloud.WithAPIErrors(ctxFor(t, time.Minute))
	_, err = agent.InstanceLimits(ctx, "m5.large")
	if cloud.Classify(err) != cloud.KindServerError || rec.Failures() != 3 {
		t.Errorf("agent, internal error: %v after %d attempts; want InternalError after 3", err, rec.Failures())
	}

	// The task launcher rides throttling out until its deadline, which
	// then says what EC2 kept answering.
	ctx, rec = cloud.WithAPIErrors(ctxFor(t, 5*time.Second))
	_, err = task.DescribeSubnet(ctx, subnet)
	err = rec.Explain(err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "EC2 kept failing until then: RequestLimitExceeded") || rec.Failures() < 2 {
		t.Errorf("task, throttled: %v after %d attempts; want the deadline, explained, after retries", err, rec.Failures())
	}
}

// TestConcurrentCallsExplainThemselves runs calls that fail differently
// on one client at once: each call's deadline is explained by what EC2
// answered that call, not by another's failure.
func TestConcurrentCallsExplainThemselves(t *testing.T) {
	v := localvpctest.Up(t, tag, "--instances", "1")
	c := newClient(v, cloud.TaskRetryPolicy)
	subnet := v.Instances[0].SubnetID
	setFaults(t, v, `{"actions":{"DescribeSubnets":{"throttleRate":1},"DescribeNetworkInterfaces":{"errorRate":1,"errorCode":"InternalError"}}}`)
	calls := map[string]func(context.Context) error{
		cloud.CodeRequestLimitExceeded: func(ctx context.Context) error { _, err := c.DescribeSubnet(ctx, subnet); return err },
		cloud.CodeInternalError:        func(ctx context.Context) error { _, err := c.DescribeENI(ctx, "eni-0123456789abcdef0"); return err },
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var explained []string
	for range 3 {
		for want, call := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				ctx, rec := cloud.WithAPIErrors(ctx)
				err := rec.Explain(call(ctx))
				mu.Lock()
				defer mu.Unlock()
				explained = append(explained, want+" => "+fmt.Sprint(err))
			}()
		}
	}
	wg.Wait()
	slices.Sort(explained)
	for _, line := range explained {
		want, got, _ := strings.Cut(line, " => ")
		if !strings.Contains(got, "EC2 kept failing until then: "+want+":") {
			t.Errorf("a call that EC2 answered with %s explains itself as: %s", want, got)
		}
	}
}
