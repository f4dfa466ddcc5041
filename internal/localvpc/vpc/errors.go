package vpc

import (
	"fmt"
	"unicode/utf8"
)

// Error is a refusal with an EC2 error code, as EC2 itself would return it.
// The wire layer turns it into an EC2 error document; any other error from
// the model is an internal failure (a state file that could not be written).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// The EC2 error codes the local VPC returns. One place knows them.
const (
	CodeAttachmentLimitExceeded            = "AttachmentLimitExceeded"
	CodeAuthFailure                        = "AuthFailure"
	CodeCannotDelete                       = "CannotDelete"
	CodeDependencyViolation                = "DependencyViolation"
	CodeDryRunOperation                    = "DryRunOperation"
	CodeInsufficientCidrBlocks             = "InsufficientCidrBlocks"
	CodeInsufficientFreeAddresses          = "InsufficientFreeAddressesInSubnet"
	CodeInternalError                      = "InternalError"
	CodeInvalidAction                      = "InvalidAction"
	CodeInvalidAttachmentIDNotFound        = "InvalidAttachmentID.NotFound"
	CodeInvalidGroupDuplicate              = "InvalidGroup.Duplicate"
	CodeInvalidGroupNotFound               = "InvalidGroup.NotFound"
	CodeInvalidGroupReserved               = "InvalidGroup.Reserved"
	CodeInvalidID                          = "InvalidID"
	CodeInvalidInstanceIDMalformed         = "InvalidInstanceID.Malformed"
	CodeInvalidInstanceIDNotFound          = "InvalidInstanceID.NotFound"
	CodeInvalidInstanceType                = "InvalidInstanceType"
	CodeInvalidIPAddressInUse              = "InvalidIPAddress.InUse"
	CodeInvalidNetworkInterfaceIDMalformed = "InvalidNetworkInterfaceID.Malformed"
	CodeInvalidNetworkInterfaceIDNotFound  = "InvalidNetworkInterfaceID.NotFound"
	CodeInvalidNetworkInterfaceInUse       = "InvalidNetworkInterface.InUse"
	CodeInvalidParameterCombination        = "InvalidParameterCombination"
	CodeInvalidParameterValue              = "InvalidParameterValue"
	CodeInvalidPermissionDuplicate         = "InvalidPermission.Duplicate"
	CodeInvalidPermissionNotFound          = "InvalidPermission.NotFound"
	CodeInvalidSubnetConflict              = "InvalidSubnet.Conflict"
	CodeInvalidSubnetIDNotFound            = "InvalidSubnetID.NotFound"
	CodeInvalidSubnetRange                 = "InvalidSubnet.Range"
	CodeInvalidVpcIDNotFound               = "InvalidVpcID.NotFound"
	CodeMissingParameter                   = "MissingParameter"
	CodeNoSuchVersion                      = "NoSuchVersion"
	CodeOperationNotPermitted              = "OperationNotPermitted"
	CodePrivateIPAddressLimitExceeded      = "PrivateIpAddressLimitExceeded"
	CodeRequestLimitExceeded               = "RequestLimitExceeded"
	CodeSecurityGroupsPerInterfaceLimit    = "SecurityGroupsPerInterfaceLimitExceeded"
	CodeTagLimitExceeded                   = "TagLimitExceeded"
	CodeUnauthorizedOperation              = "UnauthorizedOperation"
)

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalidValue(format string, args ...any) *Error {
	return errorf(CodeInvalidParameterValue, format, args...)
}

func combination(format string, args ...any) *Error {
	return errorf(CodeInvalidParameterCombination, format, args...)
}

func eniNotFound(id string) *Error {
	return errorf(CodeInvalidNetworkInterfaceIDNotFound, "The networkInterface ID '%s' does not exist", id)
}

func instanceNotFound(id string) *Error {
	return errorf(CodeInvalidInstanceIDNotFound, "The instance ID '%s' does not exist", id)
}

func subnetNotFound(id string) *Error {
	return errorf(CodeInvalidSubnetIDNotFound, "The subnet ID '%s' does not exist", id)
}

func vpcNotFound(id string) *Error {
	return errorf(CodeInvalidVpcIDNotFound, "The vpc ID '%s' does not exist", id)
}

func groupNotFound(id string) *Error {
	return errorf(CodeInvalidGroupNotFound, "The security group '%s' does not exist", id)
}

// EC2's limits on inputs that every action shares.
const (
	// MaxGroupsPerInterface is the default quota of security groups per
	// network interface.
	MaxGroupsPerInterface = 5
	// MaxDescription is the longest description of an interface or a
	// security group, in characters.
	MaxDescription = 255
)

// checkDescription refuses a description longer than EC2 takes.
func checkDescription(param, d string) error {
	if n := utf8.RuneCountInString(d); n > MaxDescription {
		return invalidValue("Value for parameter %s is invalid: %d characters, the maximum is %d.", param, n, MaxDescription)
	}
	return nil
}

// checkGroupCount refuses more security groups than an interface takes.
func checkGroupCount(groups []string) error {
	distinct := map[string]bool{}
	for _, g := range groups {
		distinct[g] = true
	}
	if len(distinct) > MaxGroupsPerInterface {
		return errorf(CodeSecurityGroupsPerInterfaceLimit, "The maximum number of security groups per interface has been reached (%d given, at most %d).", len(distinct), MaxGroupsPerInterface)
	}
	return nil
}
