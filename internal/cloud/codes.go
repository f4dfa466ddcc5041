package cloud

import (
	"errors"
	"strings"

	"github.com/aws/smithy-go"
)

// EC2 error codes that callers act on. This file is the one place in the
// product that knows them; callers ask Classify, or compare APIErrorCode
// with these constants.
const (
	CodeAttachmentLimitExceeded     = "AttachmentLimitExceeded"
	CodeENINotFound                 = "InvalidNetworkInterfaceID.NotFound"
	CodeENIMalformed                = "InvalidNetworkInterfaceID.Malformed"
	CodeENIInUse                    = "InvalidNetworkInterface.InUse"
	CodeAttachmentNotFound          = "InvalidAttachmentID.NotFound"
	CodeInvalidParameterValue       = "InvalidParameterValue"
	CodeInvalidParameterCombination = "InvalidParameterCombination"
	CodeRequestLimitExceeded        = "RequestLimitExceeded"
	CodeInsufficientCidrBlocks      = "InsufficientCidrBlocks"
	CodeInsufficientFreeAddresses   = "InsufficientFreeAddressesInSubnet"
	CodeAddressLimitExceeded        = "PrivateIpAddressLimitExceeded"
	CodeAddressInUse                = "InvalidIPAddress.InUse"
	CodeInstanceNotFound            = "InvalidInstanceID.NotFound"
	CodeSubnetNotFound              = "InvalidSubnetID.NotFound"
	CodeGroupNotFound               = "InvalidGroup.NotFound"
	CodeInvalidInstanceType         = "InvalidInstanceType"
	CodeAuthFailure                 = "AuthFailure"
	CodeUnauthorizedOperation       = "UnauthorizedOperation"
	CodeInternalError               = "InternalError"
	CodeUnavailable                 = "Unavailable"
)

// ErrorKind is what an EC2 failure means for a caller deciding what to do
// next: back off, fall back to single addresses, pick another subnet, stop
// growing, forget an ENI.
type ErrorKind int

const (
	// KindNone: err is nil.
	KindNone ErrorKind = iota
	// KindOther: not an EC2 refusal this package knows (a transport
	// error, a deadline, an unknown code).
	KindOther
	// KindThrottled: EC2's request token bucket is empty
	// (RequestLimitExceeded). Back off; the request itself was fine.
	KindThrottled
	// KindServerError: EC2 failed internally (InternalError,
	// Unavailable, an HTTP 5xx). Retry later.
	KindServerError
	// KindSubnetFull: the subnet has no free address left
	// (InsufficientFreeAddressesInSubnet).
	KindSubnetFull
	// KindNoFreePrefix: the subnet has no free aligned /28
	// (InsufficientCidrBlocks), though single addresses may remain:
	// fall back to them.
	KindNoFreePrefix
	// KindAddressLimit: the ENI holds as many addresses and prefixes as
	// its instance type allows (PrivateIpAddressLimitExceeded).
	KindAddressLimit
	// KindAttachmentLimit: the instance has as many ENIs as its type
	// allows (AttachmentLimitExceeded).
	KindAttachmentLimit
	// KindENINotFound: the ENI does not exist (any more).
	KindENINotFound
	// KindAttachmentNotFound: the attachment does not exist (any more).
	KindAttachmentNotFound
	// KindENIInUse: the ENI is attached (delete, or attach elsewhere).
	// EC2 says it with InvalidNetworkInterface.InUse or, for a delete,
	// InvalidParameterValue "... is currently in use."
	KindENIInUse
	// KindAddressInUse: an explicit address or prefix is taken.
	KindAddressInUse
	// KindDeviceIndexTaken: another ENI is attached at the device index
	// asked for; try another.
	KindDeviceIndexTaken
	// KindInvalidRequest: EC2 refused the request's parameters
	// (InvalidParameterValue, InvalidParameterCombination, unknown
	// subnet, group, instance or instance type). Retrying the same
	// request cannot help.
	KindInvalidRequest
	// KindUnauthorized: the credentials are wrong or lack a permission.
	KindUnauthorized
)

var kindNames = map[ErrorKind]string{
	KindNone: "none", KindOther: "other", KindThrottled: "throttled", KindServerError: "server-error",
	KindSubnetFull: "subnet-full", KindNoFreePrefix: "no-free-prefix", KindAddressLimit: "address-limit",
	KindAttachmentLimit: "attachment-limit", KindENINotFound: "eni-not-found",
	KindAttachmentNotFound: "attachment-not-found", KindENIInUse: "eni-in-use", KindAddressInUse: "address-in-use",
	KindDeviceIndexTaken: "device-index-taken",
	KindInvalidRequest:   "invalid-request", KindUnauthorized: "unauthorized",
}

// String names the kind in the form metrics and logs use (a label value).
func (k ErrorKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "unknown"
}

// codeKinds maps each EC2 code the product acts on to its kind. Codes EC2
// uses for throttling besides RequestLimitExceeded are not listed: EC2's
// Query API answers RequestLimitExceeded for every bucket.
var codeKinds = map[string]ErrorKind{
	CodeRequestLimitExceeded:        KindThrottled,
	CodeInternalError:               KindServerError,
	"InternalFailure":               KindServerError,
	CodeUnavailable:                 KindServerError,
	"ServiceUnavailable":            KindServerError,
	CodeInsufficientFreeAddresses:   KindSubnetFull,
	CodeInsufficientCidrBlocks:      KindNoFreePrefix,
	CodeAddressLimitExceeded:        KindAddressLimit,
	CodeAttachmentLimitExceeded:     KindAttachmentLimit,
	CodeENINotFound:                 KindENINotFound,
	CodeAttachmentNotFound:          KindAttachmentNotFound,
	CodeENIInUse:                    KindENIInUse,
	CodeAddressInUse:                KindAddressInUse,
	CodeInvalidParameterValue:       KindInvalidRequest,
	CodeInvalidParameterCombination: KindInvalidRequest,
	"MissingParameter":              KindInvalidRequest,
	CodeENIMalformed:                KindInvalidRequest,
	CodeInstanceNotFound:            KindInvalidRequest,
	CodeSubnetNotFound:              KindInvalidRequest,
	CodeGroupNotFound:               KindInvalidRequest,
	CodeInvalidInstanceType:         KindInvalidRequest,
	CodeAuthFailure:                 KindUnauthorized,
	CodeUnauthorizedOperation:       KindUnauthorized,
}

// Classify says what an error from this package (or from the SDK's EC2
// client) means. It looks through wrapping, so a caller can classify the
// error of any call, however annotated.
func Classify(err error) ErrorKind {
	if err == nil {
		return KindNone
	}
	code := APIErrorCode(err)
	if code == CodeInvalidParameterValue {
		// EC2 says some conditions only in the message.
		msg := strings.ToLower(err.Error())
		switch {
		case strings.Contains(msg, "device index"):
			return KindDeviceIndexTaken
		case strings.Contains(msg, "currently in use"):
			return KindENIInUse
		}
	}
	if k, ok := codeKinds[code]; ok {
		return k
	}
	// An error document the SDK could not tie to a code, from a server
	// that failed: what matters is that it failed.
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) && status.HTTPStatusCode() >= 500 {
		return KindServerError
	}
	return KindOther
}

// IsThrottled reports whether EC2 refused err's request for its rate.
func IsThrottled(err error) bool { return Classify(err) == KindThrottled }

// APIErrorCode returns the EC2 error code carried by err ("" if none).
func APIErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// deviceIndexTaken reports whether an attach failed because another ENI
// is at the device index already. EC2 has no code of its own for it: it
// answers InvalidParameterValue ("Instance 'i-...' already has an
// interface attached at device index '1'.").
func deviceIndexTaken(err error) bool { return Classify(err) == KindDeviceIndexTaken }
