package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestClassify(t *testing.T) {
	api := func(code string) error {
		// As the SDK returns it: an operation error around the API error.
		return fmt.Errorf("failed to assign: %w", &smithy.OperationError{
			ServiceID: "EC2", OperationName: "AssignPrivateIpAddresses",
			Err: &smithy.GenericAPIError{Code: code, Message: "m"}})
	}
	status := func(code int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: errors.New("bad gateway")}
	}
	for _, tc := range []struct {
		err  error
		want ErrorKind
	}{
		{nil, KindNone},
		{api("RequestLimitExceeded"), KindThrottled},
		{api("InternalError"), KindServerError},
		{api("Unavailable"), KindServerError},
		{status(502), KindServerError},
		{status(404), KindOther},
		{api("InsufficientFreeAddressesInSubnet"), KindSubnetFull},
		{api("InsufficientCidrBlocks"), KindNoFreePrefix},
		{api("PrivateIpAddressLimitExceeded"), KindAddressLimit},
		{api("AttachmentLimitExceeded"), KindAttachmentLimit},
		{api("InvalidNetworkInterfaceID.NotFound"), KindENINotFound},
		{api("InvalidAttachmentID.NotFound"), KindAttachmentNotFound},
		{api("InvalidNetworkInterface.InUse"), KindENIInUse},
		{api("InvalidIPAddress.InUse"), KindAddressInUse},
		{api("InvalidParameterValue"), KindInvalidRequest},
		{fmt.Errorf("attach: %w", &smithy.GenericAPIError{Code: "InvalidParameterValue",
			Message: "Instance 'i-1' already has an interface attached at device index '1'."}), KindDeviceIndexTaken},
		{&smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Network interface 'eni-1' is currently in use."}, KindENIInUse},
		{api("InvalidSubnetID.NotFound"), KindInvalidRequest},
		{api("UnauthorizedOperation"), KindUnauthorized},
		{api("AuthFailure"), KindUnauthorized},
		{api("SomethingNew"), KindOther},
		{fmt.Errorf("attach: %w", context.DeadlineExceeded), KindOther},
		{errors.New("connection refused"), KindOther},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !IsThrottled(api("RequestLimitExceeded")) || IsThrottled(api("InternalError")) {
		t.Error("IsThrottled disagrees with Classify")
	}
	for k := KindNone; k <= KindUnauthorized; k++ {
		if k.String() == "unknown" {
			t.Errorf("kind %d has no name", k)
		}
	}
}

func TestAddressRequestCheck(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	for _, tc := range []struct {
		req  AddressRequest
		want string // "" for valid
	}{
		{AddressRequest{Count: 2}, ""},
		{AddressRequest{PrefixCount: 1}, ""},
		{AddressRequest{Addresses: []netip.Addr{a("10.0.0.9")}}, ""},
		{AddressRequest{Prefixes: []netip.Prefix{p("10.0.0.16/28")}}, ""},
		{AddressRequest{}, "nothing to assign: set one of Count, Addresses, PrefixCount, Prefixes"},
		{AddressRequest{Count: -1}, "Count -1: must not be negative"},
		{AddressRequest{PrefixCount: -2}, "PrefixCount -2: must not be negative"},
		{AddressRequest{Count: 1, PrefixCount: 1}, "Count and PrefixCount: EC2 takes only one of them per call"},
		{AddressRequest{Addresses: []netip.Addr{a("10.0.0.9")}, Prefixes: []netip.Prefix{p("10.0.0.16/28")}}, "Addresses and Prefixes: EC2 takes only one of them per call"},
		{AddressRequest{Addresses: []netip.Addr{a("10.0.0.9"), a("fd00::9")}}, "Addresses[1] fd00::9: not an IPv4 address"},
		{AddressRequest{Prefixes: []netip.Prefix{p("10.0.0.16/27")}}, "Prefixes[0] 10.0.0.16/27: not an aligned IPv4 /28"},
		{AddressRequest{Prefixes: []netip.Prefix{p("10.0.0.17/28")}}, "Prefixes[0] 10.0.0.17/28: not an aligned IPv4 /28"},
	} {
		err := tc.req.check()
		if got := fmt.Sprint(err); (err == nil) != (tc.want == "") || err != nil && got != tc.want {
			t.Errorf("check(%+v) = %v, want %q", tc.req, err, tc.want)
		}
	}
}

func TestRetryPolicies(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	internal := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}},
		Err: &smithy.GenericAPIError{Code: "InternalError", Message: "An internal error has occurred"}}
	refused := &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "no"}
	for _, tc := range []struct {
		name                        string
		policy                      RetryPolicy
		attempts                    int
		throttle, internal, refused bool // retried?
	}{
		{"default", DefaultRetry, 10, true, true, false},
		{"task", TaskRetryPolicy, 25, true, true, false},
		{"agent", AgentRetryPolicy, 3, false, true, false},
	} {
		r := tc.policy.NewRetryer()
		if r.MaxAttempts() != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.name, r.MaxAttempts(), tc.attempts)
		}
		for _, c := range []struct {
			err  error
			want bool
		}{{throttled, tc.throttle}, {internal, tc.internal}, {refused, tc.refused}} {
			if got := r.IsErrorRetryable(c.err); got != c.want {
				t.Errorf("%s: retry %v = %v, want %v", tc.name, c.err, got, c.want)
			}
		}
	}
}
