package cni

import (
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

// AsVersion converts a result to the config's spec version, as ADD must
// report it. The library's conversion copies every field, so a result for
// a version before 1.1.0 would still carry the fields that 1.1.0 added
// (route mtu, advmss, priority, table, scope; interface mtu, socketPath,
// pciID), which a runtime of that version does not know: they are left out
// here. res itself is not changed.
func AsVersion(res *current.Result, version string) (types.Result, error) {
	if newer, err := cniversion.GreaterThanOrEqualTo(version, "1.1.0"); err == nil && !newer {
		res = without11Fields(res)
	}
	out, err := res.GetAsVersion(version)
	if err != nil {
		return nil, Wrap(CodeInternal, err, "convert the result to version %s", version)
	}
	return out, nil
}

// without11Fields returns a copy of res without the fields of spec 1.1.0.
func without11Fields(res *current.Result) *current.Result {
	out := *res
	out.Interfaces = make([]*current.Interface, len(res.Interfaces))
	for i, intf := range res.Interfaces {
		c := *intf
		c.Mtu, c.SocketPath, c.PciID = 0, "", ""
		out.Interfaces[i] = &c
	}
	out.Routes = make([]*types.Route, len(res.Routes))
	for i, r := range res.Routes {
		out.Routes[i] = &types.Route{Dst: r.Dst, GW: r.GW}
	}
	return &out
}
