// Command cninoop is a CNI plugin that does nothing: ADD returns the
// previous result (or an empty one), every other verb succeeds. The
// benchmarks run it through the same runtime path as the real plugins to
// measure the floor: process start, config decoding and result printing.
package main

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
)

func main() {
	ok := func(context.Context, *skel.CmdArgs) error { return nil }
	cni.Main("cninoop", cni.Verbs{Add: add, Del: ok, Check: ok, GC: ok, Status: ok})
}

func add(_ context.Context, args *skel.CmdArgs) (types.Result, error) {
	var nc types.PluginConf
	if err := cni.DecodeConfig(args.StdinData, &nc); err != nil {
		return nil, err
	}
	res, err := cni.PrevResult(&nc, false)
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	}
	return cni.AsVersion(res, nc.CNIVersion)
}
