// Command cninoop is a CNI plugin that does nothing: ADD returns the
// previous result (or an empty one), every other verb succeeds. The
// benchmarks run it through the same runtime path as the real plugins to
// measure the floor: process start, config decoding and result printing.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/vpcnet/vpcnet/internal/cni"
)

func main() {
	ok := func(*skel.CmdArgs) error { return nil }
	cni.Main("cninoop", skel.CNIFuncs{Add: add, Del: ok, Check: ok, GC: ok, Status: ok})
}

func add(args *skel.CmdArgs) error {
	var nc types.PluginConf
	if err := cni.DecodeConfig(args.StdinData, &nc); err != nil {
		return err
	}
	if err := cniversion.ParsePrevResult(&nc); err != nil {
		return cni.Errorf(cni.CodeDecodingFailure, "failed to parse prevResult: %v", err)
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if nc.PrevResult != nil {
		r, err := current.NewResultFromResult(nc.PrevResult)
		if err != nil {
			return cni.Errorf(cni.CodeDecodingFailure, "failed to convert prevResult: %v", err)
		}
		res = r
	}
	return types.PrintResult(res, nc.CNIVersion)
}
