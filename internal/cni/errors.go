// Package cni is the plumbing every vpcnet CNI plugin shares: the spec
// versions we speak, errors with the spec's codes and a message naming the
// field at fault, config decoding, GC attachment lists, and the main
// function of a plugin binary. Only plugins import it; logging and the
// crash-test hook live in internal/logging and internal/crashpoint.
package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Error codes of the CNI spec, named once for the whole project.
const (
	CodeIncompatibleVersion = types.ErrIncompatibleCNIVersion // 1
	CodeUnsupportedField    = types.ErrUnsupportedField       // 2
	CodeUnknownContainer    = types.ErrUnknownContainer       // 3
	CodeInvalidEnvironment  = types.ErrInvalidEnvironmentVariables
	CodeIOFailure           = types.ErrIOFailure            // 5
	CodeDecodingFailure     = types.ErrDecodingFailure      // 6
	CodeInvalidConfig       = types.ErrInvalidNetworkConfig // 7
	CodeInvalidNetNS        = types.ErrInvalidNetNS         // 8
	CodeTryAgainLater       = types.ErrTryAgainLater        // 11
	// STATUS: the plugin cannot serve ADDs now.
	CodePluginNotAvailable uint = 50
	// STATUS: ADDs work but with reduced connectivity.
	CodeLimitedConnectivity uint = 51
	// vpcnet's own code (the spec leaves 100 and up to plugins): no free
	// address in a range. Freeing addresses, not retrying, fixes it.
	CodeAddressesExhausted uint = 100
	CodeInternal                = types.ErrInternal // 999
)

// Errorf returns a CNI error with the given code.
func Errorf(code uint, format string, args ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, args...), "")
}

// FieldError reports a config field that is missing or wrong (code 7).
// field is the name as the user wrote it in the config, e.g. "ipam.subnet".
func FieldError(field, format string, args ...any) *types.Error {
	return types.NewError(CodeInvalidConfig, fmt.Sprintf("invalid config: field %q: %s", field, fmt.Sprintf(format, args...)), "")
}

// EnvError reports a bad or missing CNI_* variable (code 4).
func EnvError(variable, format string, args ...any) *types.Error {
	return types.NewError(CodeInvalidEnvironment, fmt.Sprintf("invalid environment: %s: %s", variable, fmt.Sprintf(format, args...)), "")
}

// Wrap returns err unchanged if it already carries a CNI code, and otherwise
// a CNI error with code, its message prefixed by what was being done.
func Wrap(code uint, err error, doing string, args ...any) error {
	if err == nil {
		return nil
	}
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(code, fmt.Sprintf("failed to %s: %v", fmt.Sprintf(doing, args...), err), "")
}
