package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/version"
)

// SpecVersions are the CNI spec versions every vpcnet plugin speaks.
var SpecVersions = cniversion.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Verbs are a plugin's CNI verbs, all of one shape. Add returns its result
// in the config's version (see AsVersion); printing it is Main's job, so a
// verb never writes to stdout and in-process callers get values.
type Verbs struct {
	Add    func(ctx context.Context, args *skel.CmdArgs) (types.Result, error)
	Del    func(ctx context.Context, args *skel.CmdArgs) error
	Check  func(ctx context.Context, args *skel.CmdArgs) error
	GC     func(ctx context.Context, args *skel.CmdArgs) error
	Status func(ctx context.Context, args *skel.CmdArgs) error
}

// SkelFuncs adapts the verbs to skel, which dispatches on CNI_COMMAND:
// the result of ADD is printed on stdout here, and nowhere else.
func (v Verbs) SkelFuncs(ctx context.Context) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			res, err := v.Add(ctx, args)
			if err != nil {
				return err
			}
			if err := res.Print(); err != nil {
				return Wrap(CodeIOFailure, err, "print the result")
			}
			return nil
		},
		Del:    func(args *skel.CmdArgs) error { return v.Del(ctx, args) },
		Check:  func(args *skel.CmdArgs) error { return v.Check(ctx, args) },
		GC:     func(args *skel.CmdArgs) error { return v.GC(ctx, args) },
		Status: func(args *skel.CmdArgs) error { return v.Status(ctx, args) },
	}
}

// Main runs a plugin binary: --version prints the build stamp as JSON, a CNI
// command is dispatched to the verbs by skel, and logging goes to
// VPCNET_LOG_FILE and stderr (never stdout, which carries the result). It is
// the whole body of each plugin's main function.
func Main(name string, verbs Verbs) {
	version.HandleFlag()
	logger, closeLog := logging.New(name)
	slog.SetDefault(logger)
	if os.Getenv("CNI_COMMAND") != "" && os.Getenv("CNI_COMMAND") != "VERSION" {
		if err := nameNamelessConfig(); err != nil {
			logger.Warn("cannot read the network config", "err", err)
		}
	}
	about := "CNI plugin " + name + " " + version.Get().String()
	err := skel.PluginMainFuncsWithError(verbs.SkelFuncs(context.Background()), SpecVersions, about)
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
// the input is not a JSON object: skel reports that). A missing name is
// written in front of the other keys, which are kept byte for byte, so that
// a key given twice still reaches the plugin's decoder to be refused; an
// empty one is replaced only in a config without such a key.
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
	quoted, _ := json.Marshal(typ)
	if _, present := conf["name"]; !present {
		open := bytes.IndexByte(data, '{')
		out := append([]byte{}, data[:open+1]...)
		out = append(out, `"name":`...)
		out = append(out, quoted...)
		out = append(out, ',')
		return append(out, data[open+1:]...), true
	}
	if dup, err := duplicateKey(data); dup != "" || err != nil {
		return nil, false
	}
	conf["name"] = quoted
	out, err := json.Marshal(conf)
	if err != nil {
		return nil, false
	}
	return out, true
}
