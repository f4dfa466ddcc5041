package vpcipam

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/ipam"
)

// Request is an explicitly requested address and the field it came from,
// which errors about it name.
type Request struct {
	Addr  netip.Addr
	Field string
}

// requests gathers the explicitly requested addresses of the config:
// ipam.ips, ipam.ipv4Address/ipv6Address, the "ips" capability
// (runtimeConfig.ips) and the args convention (args.cni.ips).
func requests(raw *rawConfig, fams []family) ([]Request, error) {
	var out []Request
	addList := func(field string, list []string) error {
		for i, s := range list {
			f := fmt.Sprintf("%s[%d]", field, i)
			a, err := parseHostAddr(f, s)
			if err != nil {
				return err
			}
			out = append(out, Request{Addr: a, Field: f})
		}
		return nil
	}
	if err := addList("ipam.ips", raw.IPAM.IPs); err != nil {
		return nil, err
	}
	for _, f := range fams {
		if !f.address.Set() {
			continue
		}
		a, err := parseHostAddr(f.address.Field, f.address.Value)
		if err != nil {
			return nil, err
		}
		if a.Is4() != f.is4 {
			return nil, cni.FieldError(f.address.Field, "%s is not an %s address", a, f.name)
		}
		out = append(out, Request{Addr: a, Field: f.address.Field})
	}
	if err := addList("runtimeConfig.ips", raw.RuntimeConfig.IPs); err != nil {
		return nil, err
	}
	if err := addList("args.cni.ips", raw.Args.CNI.IPs); err != nil {
		return nil, err
	}
	return out, nil
}

// Want places the config's requested addresses and those of CNI_ARGS
// ("IP=10.0.0.5,fd00::5") into the pool's range sets: one entry per set,
// zero where next-fit chooses.
func (c *Config) Want(cniArgs string) ([]netip.Addr, []Request, error) {
	reqs := c.Requests
	fromArgs, err := argsIPs(cniArgs)
	if err != nil {
		return nil, nil, err
	}
	reqs = append(reqs[:len(reqs):len(reqs)], fromArgs...)
	addrs := make([]netip.Addr, len(reqs))
	for i, r := range reqs {
		addrs[i] = r.Addr
	}
	want, err := ipam.Place(c.Pool.Sets, addrs)
	if err != nil {
		pe := err.(*ipam.PlaceError)
		return nil, nil, cni.FieldError(reqs[pe.Index].Field, "%s", pe.Error())
	}
	return want, reqs, nil
}

// argsIPs reads IP= from CNI_ARGS. Other keys belong to other plugins or
// the runtime (K8S_POD_NAME, IgnoreUnknown) and are left alone.
func argsIPs(cniArgs string) ([]Request, error) {
	const field = "CNI_ARGS IP"
	var out []Request
	for _, pair := range strings.Split(cniArgs, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, cni.EnvError("CNI_ARGS", "%q is not KEY=VALUE", pair)
		}
		if k != "IP" {
			continue
		}
		for _, s := range strings.Split(v, ",") {
			a, err := parseHostAddr(field, strings.TrimSpace(s))
			if err != nil {
				return nil, err
			}
			out = append(out, Request{Addr: a, Field: field})
		}
	}
	return out, nil
}

// parseHostAddr accepts an address with or without a prefix length
// ("10.0.0.5" or "10.0.0.5/24", as ECS and the ips capability write it).
// The length is not used: the subnet of the range decides it.
func parseHostAddr(field, s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, cni.FieldError(field, "%q is not an IP address", s)
		}
		return p.Addr().Unmap(), nil
	}
	return parseAddr(field, s)
}
