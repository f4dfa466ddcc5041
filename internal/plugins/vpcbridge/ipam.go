package vpcbridge

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// ipamPlugin is the IPAM plugin named by ipam.type, run with the same config
// and the same CNI_* values this plugin was given. The values are passed
// explicitly rather than inherited from the environment, so the delegation
// depends only on the arguments of the verb.
type ipamPlugin struct {
	name string
	path string
	args *skel.CmdArgs
}

// findIPAM locates the IPAM plugin in CNI_PATH, before anything is changed.
func findIPAM(conf *Config, args *skel.CmdArgs) (ipamPlugin, error) {
	path, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(args.Path))
	if err != nil {
		return ipamPlugin{}, cni.FieldError("ipam.type", "IPAM plugin %q not found in CNI_PATH %q", conf.IPAM.Type, args.Path)
	}
	return ipamPlugin{name: conf.IPAM.Type, path: path, args: args}, nil
}

// add allocates the container's addresses and returns them as a current
// result, whatever version the plugin answered in.
func (p ipamPlugin) add(ctx context.Context) (*current.Result, error) {
	res, err := invoke.ExecPluginWithResult(ctx, p.path, p.args.StdinData, p.cniArgs("ADD"), nil)
	if err != nil {
		return nil, p.wrap("ADD", err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned a result that cannot be read: %v", p.name, err)
	}
	return cur, nil
}

// run executes a verb that returns no result: DEL, CHECK, GC, STATUS.
func (p ipamPlugin) run(ctx context.Context, verb string) error {
	if err := invoke.ExecPluginWithoutResult(ctx, p.path, p.args.StdinData, p.cniArgs(verb), nil); err != nil {
		return p.wrap(verb, err)
	}
	return nil
}

func (p ipamPlugin) cniArgs(verb string) *invoke.Args {
	return &invoke.Args{
		Command:       verb,
		ContainerID:   p.args.ContainerID,
		NetNS:         p.args.Netns,
		PluginArgsStr: p.args.Args,
		IfName:        p.args.IfName,
		Path:          p.args.Path,
	}
}

// wrap keeps the IPAM plugin's error code (exhausted range, invalid config,
// try again) and says which plugin and verb it came from.
func (p ipamPlugin) wrap(verb string, err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		code := e.Code
		if code == 0 {
			// The plugin died without a JSON error (a crash, a signal).
			code = cni.CodeInternal
		}
		return types.NewError(code, fmt.Sprintf("IPAM plugin %q %s: %s", p.name, verb, e.Msg), e.Details)
	}
	return cni.Errorf(cni.CodeInternal, "IPAM plugin %q %s: %v", p.name, verb, err)
}
