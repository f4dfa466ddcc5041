package localvpc_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// setFaults changes the faults of a running local VPC with `vpcnet local
// faults` and checks that the command reports them in force.
func setFaults(t *testing.T, v *localvpctest.VPC, doc string) {
	t.Helper()
	var want, got ec2api.Faults
	if err := json.Unmarshal([]byte(doc), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(v.Vpcnet("local", "faults", "--name", v.Name, doc)), &got); err != nil {
		t.Fatal(err)
	}
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(got)
	if string(w) != string(g) {
		t.Fatalf("faults in force: %s, want %s", g, w)
	}
}

// TestAttachDelay makes attachments take time, as on AWS: while the delay
// runs the attachment is "attaching" and the instance has no device; once
// it is over the device appears, and the attachment is "attached" only
// once it has. What is asserted during the delay is asserted under a delay
// of an hour, cleared afterwards, so that a stalled runner cannot see the
// delay end early; a short delay then shows one ending by itself.
func TestAttachDelay(t *testing.T) {
	v := up(t, tagFaults)
	c := v.EC2()
	in1 := v.Instances[0]
	setFaults(t, v, `{"attachDelay":"1h"}`)

	eni := createENI(t, c, v.Subnets[0].ID)
	id := *eni.NetworkInterfaceId
	attachENI(t, c, id, in1.ID, 1)
	if s := attachmentStatus(describeENI(t, c, id)); s != "attaching" {
		t.Errorf("attachment right after the call: %q, want attaching", s)
	}
	if dev := deviceIn(t, in1.Namespace, *eni.MacAddress); dev != nil {
		t.Errorf("device %s on the instance right after the call, before the attach delay", dev.Attrs().Name)
	}
	// Held back until the delay is cleared, without waiting for it.
	v.Vpcnet("local", "faults", "--name", v.Name, "--clear")
	waitDevice(t, in1.Namespace, *eni.MacAddress)
	testenv.EventuallyTrue(t, "the attachment becomes attached", converge, func() bool {
		s := attachmentStatus(describeENI(t, c, id))
		if s == "attached" && deviceIn(t, in1.Namespace, *eni.MacAddress) == nil {
			t.Fatalf("attachment is attached but the instance has no device")
		}
		return s == "attached"
	})

	// A short delay ends by itself.
	setFaults(t, v, `{"attachDelay":"500ms"}`)
	other := createENI(t, c, v.Subnets[0].ID)
	attachENI(t, c, *other.NetworkInterfaceId, in1.ID, 2)
	waitDevice(t, in1.Namespace, *other.MacAddress)
	waitAttachment(t, c, *other.NetworkInterfaceId, "attached")
}

// TestInjectedErrors makes one action fail with a chosen EC2 error code:
// the SDK reports that code for that action, the others work, and clearing
// the faults brings the action back.
func TestInjectedErrors(t *testing.T) {
	v := up(t, tagFaults)
	c := v.EC2()
	setFaults(t, v, `{"actions":{"CreateNetworkInterface":{"errorRate":1,"errorCode":"InsufficientFreeAddressesInSubnet","errorMessage":"injected by the test"}}}`)
	_, err := c.CreateNetworkInterface(t.Context(), &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(v.Subnets[0].ID)})
	if code := apiCode(err); code != "InsufficientFreeAddressesInSubnet" || !strings.Contains(err.Error(), "injected by the test") {
		t.Fatalf("CreateNetworkInterface with an injected error: %v, want InsufficientFreeAddressesInSubnet", err)
	}
	if _, err := c.DescribeSubnets(t.Context(), &ec2.DescribeSubnetsInput{}); err != nil {
		t.Errorf("DescribeSubnets, which has no faults: %v", err)
	}
	v.Vpcnet("local", "faults", "--name", v.Name, "--clear")
	createENI(t, c, v.Subnets[0].ID)
}

// TestThrottling throttles every call of an action: the SDK sees
// RequestLimitExceeded when it does not retry; with part of the calls
// throttled, its retryer gets through.
func TestThrottling(t *testing.T) {
	v := up(t, tagFaults)
	c := v.EC2()
	setFaults(t, v, `{"actions":{"DescribeSubnets":{"throttleRate":1}}}`)
	_, err := c.DescribeSubnets(t.Context(), &ec2.DescribeSubnetsInput{}, noRetries)
	if code := apiCode(err); code != "RequestLimitExceeded" {
		t.Fatalf("DescribeSubnets, throttled, no retries: %v, want RequestLimitExceeded", err)
	}
	if _, err := c.DescribeVpcs(t.Context(), &ec2.DescribeVpcsInput{}, noRetries); err != nil {
		t.Errorf("DescribeVpcs, not throttled: %v", err)
	}

	setFaults(t, v, `{"actions":{"DescribeSubnets":{"throttleRate":0.5}}}`)
	patient := func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 30
			o.MaxBackoff = 50 * time.Millisecond
			o.RateLimiter = ratelimit.None
		})
	}
	// Call until one call needed retries (each call is throttled on its
	// first attempt with probability 0.5); every call must succeed.
	retried := false
	for i := 0; i < 40 && !retried; i++ {
		out, err := c.DescribeSubnets(t.Context(), &ec2.DescribeSubnetsInput{}, patient)
		if err != nil {
			t.Fatalf("DescribeSubnets, half throttled, with retries: %v", err)
		}
		if len(out.Subnets) != 2 {
			t.Errorf("DescribeSubnets returned %d subnets", len(out.Subnets))
		}
		r, _ := retry.GetAttemptResults(out.ResultMetadata)
		retried = len(r.Results) > 1
	}
	if !retried {
		t.Errorf("40 calls at throttle rate 0.5 each got through at the first attempt")
	}
}

// TestMetadataLag makes instance metadata trail EC2: after an attachment
// is attached the instance's metadata does not list the ENI's MAC until
// the lag has passed. As in TestAttachDelay, the "not yet" is asserted
// under a lag of an hour, then cleared; a short lag then passes by itself.
func TestMetadataLag(t *testing.T) {
	v := up(t, tagFaults)
	c := v.EC2()
	in1 := v.Instances[0]
	setFaults(t, v, `{"metadataLag":"1h"}`)

	eni := createENI(t, c, v.Subnets[0].ID)
	mac := *eni.MacAddress
	attachENI(t, c, *eni.NetworkInterfaceId, in1.ID, 1)
	waitAttachment(t, c, *eni.NetworkInterfaceId, "attached")
	if macs := imdsGet(t, in1.Namespace, "network/interfaces/macs/"); strings.Contains(macs, mac) {
		t.Errorf("metadata lists %s right after the attachment completed, despite an hour's lag:\n%s", mac, macs)
	}
	v.Vpcnet("local", "faults", "--name", v.Name, "--clear")
	testenv.EventuallyTrue(t, "metadata lists the new ENI once the lag is cleared", converge, func() bool {
		return strings.Contains(imdsGet(t, in1.Namespace, "network/interfaces/macs/"), mac+"/")
	})

	setFaults(t, v, `{"metadataLag":"500ms"}`)
	other := createENI(t, c, v.Subnets[0].ID)
	attachENI(t, c, *other.NetworkInterfaceId, in1.ID, 2)
	waitAttachment(t, c, *other.NetworkInterfaceId, "attached")
	testenv.EventuallyTrue(t, "metadata lists the second ENI once a short lag has passed", converge, func() bool {
		return strings.Contains(imdsGet(t, in1.Namespace, "network/interfaces/macs/"), *other.MacAddress+"/")
	})
}
