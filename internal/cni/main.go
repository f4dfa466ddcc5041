package cni

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/vpcnet/vpcnet/internal/logging"
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
	logger, closeLog := logging.New(name)
	slog.SetDefault(logger)
	if os.Getenv("CNI_COMMAND") != "" && os.Getenv("CNI_COMMAND") != "VERSION" {
		if err := nameNamelessConfig(); err != nil {
			logger.Warn("cannot read the network config", "err", err)
		}
	}
	about := "CNI plugin " + name + " " + version.Get().String()
	err := skel.PluginMainFuncsWithError(funcs, SpecVersions, about)
	if err != nil {
		logger.Warn("command failed", "code", err.Code, "msg", err.Msg, "details", err.Details)
		closeLog()
		if perr := err.Print(); perr != nil {
			logger.Error("cannot write error to stdout", "err", perr)
		}
		os.Exit(1)
	}
	closeLog()
}

// nameNamelessConfig gives a config without a "name" the name of its
// "type". The ECS agent writes its ENI and bridge configs without a name,
// and skel refuses those before a plugin sees them; naming the network
// after the plugin type keeps ADD and DEL of one agent consistent.
func nameNamelessConfig() error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	if patched, ok := WithDefaultName(data); ok {
		data = patched
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	go func() {
		_, _ = io.Copy(w, bytes.NewReader(data))
		w.Close()
	}()
	os.Stdin = r
	return nil
}

// WithDefaultName returns the config with "name" set to its "type" when
// the name is missing or empty, and false when nothing needed changing (or
// the input is not a JSON object: skel reports that).
func WithDefaultName(data []byte) ([]byte, bool) {
	var conf map[string]json.RawMessage
	if json.Unmarshal(data, &conf) != nil {
		return nil, false
	}
	var name, typ string
	_ = json.Unmarshal(conf["name"], &name)
	_ = json.Unmarshal(conf["type"], &typ)
	if name != "" || typ == "" {
		return nil, false
	}
	conf["name"], _ = json.Marshal(typ)
	out, err := json.Marshal(conf)
	if err != nil {
		return nil, false
	}
	return out, true
}
