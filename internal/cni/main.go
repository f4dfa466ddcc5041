package cni

import (
	"log/slog"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/vpcnet/vpcnet/internal/version"
)

// SpecVersions are the CNI spec versions every vpcnet plugin speaks.
var SpecVersions = cniversion.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Main runs a plugin binary: --version prints the build stamp as JSON, a CNI
// command is dispatched to funcs by skel, and logging goes to VPCNET_LOG_FILE
// and stderr (never stdout, which carries the result). It is the whole body
// of each plugin's main function.
func Main(name string, funcs skel.CNIFuncs) {
	version.HandleFlag()
	logger, closeLog := NewLogger(name)
	slog.SetDefault(logger)
	about := "CNI plugin " + name + " " + version.Get().String()
	err := skel.PluginMainFuncsWithError(funcs, SpecVersions, about)
	if err != nil {
		logger.Warn("command failed", "code", err.Code, "msg", err.Msg, "details", err.Details)
		closeLog()
		if perr := err.Print(); perr != nil {
			logger.Error("cannot write error to stdout", "err", perr)
		}
		exit(1)
	}
	closeLog()
}
