package ec2api

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// tinyBucket lets one DescribeVpcs through and refills one token every
// 100 ms.
func tinyBucket() ThrottleConfig {
	cfg := DefaultThrottle()
	cfg.NonMutating = Bucket{Capacity: 1, RefillPerSecond: 10}
	return cfg
}

func TestThrottlingSDKRetriesThrough(t *testing.T) {
	c := newCloud(t, Config{Throttle: tinyBucket()})
	api := c.client(func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 20
			so.MaxBackoff = 200 * time.Millisecond
		})
	})
	for i := range 4 {
		if _, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
			t.Fatalf("call %d did not get through the retryer: %v", i, err)
		}
	}
	if c.statuses.throttled.Load() == 0 {
		t.Fatal("four back-to-back calls through a one-token bucket were never throttled")
	}
}

func TestThrottlingWithoutRetries(t *testing.T) {
	c := newCloud(t, Config{Throttle: tinyBucket()})
	api := c.client(noRetries)
	var err error
	for range 3 {
		if _, err = api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
			break
		}
	}
	wantAPIError(t, err, "RequestLimitExceeded")
	// Another action has its own bucket.
	if _, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}); err != nil {
		t.Fatalf("DescribeSubnets was throttled by DescribeVpcs' bucket: %v", err)
	}
}

func TestBucketFor(t *testing.T) {
	cfg := DefaultThrottle()
	for _, tc := range []struct {
		action   string
		filtered bool
		key      string
		want     Bucket
	}{
		{"DescribeNetworkInterfaces", false, "DescribeNetworkInterfaces/unfiltered", Bucket{50, 10}},
		{"DescribeNetworkInterfaces", true, "DescribeNetworkInterfaces", Bucket{100, 20}},
		{"DescribeSubnets", false, "DescribeSubnets", Bucket{100, 20}},
		{"AttachNetworkInterface", false, "AttachNetworkInterface", Bucket{50, 5}},
		{"AuthorizeSecurityGroupIngress", false, "AuthorizeSecurityGroupIngress", Bucket{50, 5}},
		{"AssignPrivateIpAddresses", false, "AssignPrivateIpAddresses", Bucket{100, 5}},
		{"CreateTags", false, "CreateTags", Bucket{100, 10}},
	} {
		key, b := cfg.bucketFor(tc.action, tc.filtered)
		if key != tc.key || b != tc.want {
			t.Errorf("%s (filtered %v): bucket %s %+v, want %s %+v", tc.action, tc.filtered, key, b, tc.key, tc.want)
		}
	}
}

func TestTokenBucketRefill(t *testing.T) {
	now := time.Unix(0, 0)
	th := newThrottle(ThrottleConfig{Mutating: Bucket{Capacity: 2, RefillPerSecond: 1}}, func() time.Time { return now })
	seq := []struct {
		advance time.Duration
		want    bool
	}{{0, true}, {0, true}, {0, false}, {500 * time.Millisecond, false}, {500 * time.Millisecond, true}, {0, false}, {10 * time.Second, true}, {0, true}, {0, false}}
	for i, s := range seq {
		now = now.Add(s.advance)
		if got := th.allow("CreateSomething", false); got != s.want {
			t.Fatalf("step %d: allow = %v, want %v", i, got, s.want)
		}
	}
}

func TestFaultPlan(t *testing.T) {
	for _, tc := range []struct {
		name              string
		f                 ActionFaults
		lat, thr, errDraw float64
		delay             time.Duration
		code              string
	}{
		{"nothing", ActionFaults{}, 0.5, 0.5, 0.5, 0, ""},
		{"fixed latency", ActionFaults{Latency: Duration(time.Second)}, 0.9, 0.5, 0.5, time.Second, ""},
		{"latency range", ActionFaults{Latency: Duration(time.Second), LatencyMax: Duration(3 * time.Second)}, 0.5, 0.5, 0.5, 2 * time.Second, ""},
		{"error hit", ActionFaults{ErrorRate: 0.3, ErrorCode: "Unavailable"}, 0, 0.9, 0.2, 0, "Unavailable"},
		{"error missed", ActionFaults{ErrorRate: 0.3, ErrorCode: "Unavailable"}, 0, 0.9, 0.4, 0, ""},
		{"default code", ActionFaults{ErrorRate: 1}, 0, 0.9, 0.99, 0, "InternalError"},
		{"throttle wins", ActionFaults{ErrorRate: 1, ThrottleRate: 1}, 0, 0.99, 0, 0, "RequestLimitExceeded"},
	} {
		p := tc.f.plan(tc.lat, tc.thr, tc.errDraw)
		code := ""
		if p.err != nil {
			code = p.err.Code
		}
		if p.delay != tc.delay || code != tc.code {
			t.Errorf("%s: delay %v code %q, want %v %q", tc.name, p.delay, code, tc.delay, tc.code)
		}
	}
}

func TestFaultsJSON(t *testing.T) {
	in := `{"actions":{"*":{"latency":"10ms"},"AttachNetworkInterface":{"latency":"1s","latencyMax":"3s","errorRate":0.1,"errorCode":"Unavailable","throttleRate":0.05}},"attachDelay":"2s","metadataLag":"500ms"}`
	var f Faults
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	if f.AttachDelay != Duration(2*time.Second) || f.For("AttachNetworkInterface").LatencyMax != Duration(3*time.Second) || f.For("DescribeVpcs").Latency != Duration(10*time.Millisecond) {
		t.Fatalf("decoded %+v", f)
	}
	out, _ := json.Marshal(f)
	var back Faults
	if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, f) {
		t.Fatalf("round trip %s: %+v %v", out, back, err)
	}
	if err := (Faults{Actions: map[string]ActionFaults{"*": {ErrorRate: 2}}}).Validate(); err == nil {
		t.Error("an error rate of 2 was accepted")
	}
}

func TestInjectedFaults(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client(noRetries)

	if err := c.handler.SetFaults(Faults{Actions: map[string]ActionFaults{"DescribeVpcs": {ErrorRate: 1, ErrorCode: "Unavailable", ErrorMessage: "injected"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantAPIError(t, err, "Unavailable")
	if _, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}); err != nil {
		t.Fatalf("a fault on DescribeVpcs hit DescribeSubnets: %v", err)
	}

	if err := c.handler.SetFaults(Faults{Actions: map[string]ActionFaults{"*": {ThrottleRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err = api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	wantAPIError(t, err, "RequestLimitExceeded")

	const latency = 150 * time.Millisecond
	if err := c.handler.SetFaults(Faults{Actions: map[string]ActionFaults{"DescribeVpcs": {Latency: Duration(latency)}}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("call took %v with %v injected latency", took, latency)
	}
	short, cancel := context.WithTimeout(ctx, latency/3)
	defer cancel()
	_, err = api.DescribeVpcs(short, &ec2.DescribeVpcsInput{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a caller's deadline shorter than the injected latency: %v", err)
	}
	if err := c.handler.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("after clearing faults: %v", err)
	}
}

func TestParamsMembers(t *testing.T) {
	v, _ := url.ParseQuery("Filter.2.Name=b&Filter.1.Name=a&Filter.1.Value.1=x&Filter.1.Value.2=y&Filter.10.Name=c&SecurityGroupId.1=sg-1&SecurityGroupId.2=sg-2&Ipv4Prefix.1.Ipv4Prefix=10.0.0.16/28")
	p := params(v)
	fs := p.filters()
	if len(fs) != 3 || fs[0].Name != "a" || fs[1].Name != "b" || fs[2].Name != "c" || !reflect.DeepEqual(fs[0].Values, []string{"x", "y"}) {
		t.Errorf("filters %+v", fs)
	}
	if got := p.list("SecurityGroupId"); !reflect.DeepEqual(got, []string{"sg-1", "sg-2"}) {
		t.Errorf("list %v", got)
	}
	if got := p.structList("Ipv4Prefix", "Ipv4Prefix"); !reflect.DeepEqual(got, []string{"10.0.0.16/28"}) {
		t.Errorf("structList %v", got)
	}
}
