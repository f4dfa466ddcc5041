// Package vpcipam is the vpc-ipam CNI IPAM plugin: each verb of the CNI
// spec as one function over the allocator in internal/ipam. It reads its
// own config format (host-local-like "ranges", camelCase) and the ECS
// agent's ecs-ipam format, so that it can replace ecs-ipam.
package vpcipam

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/ipam"
)

// Verbs are the plugin's CNI verbs, for cni.Main.
var Verbs = cni.Verbs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

// Add gives the attachment one address from every range set, or returns
// what it already holds: a retried ADD converges on the same addresses.
func Add(_ context.Context, args *skel.CmdArgs) (types.Result, error) {
	conf, err := decodeConfig(args.StdinData, os.Getenv)
	if err != nil {
		return nil, err
	}
	want, reqs, err := conf.Want(args.Args)
	if err != nil {
		return nil, err
	}
	store, err := openStore(conf)
	if err != nil {
		return nil, err
	}
	defer closeStore(store)
	alloc, err := store.Allocate(conf.Pool, owner(args, conf), want)
	if err != nil {
		return nil, allocateError(err, conf.Pool.Network, reqs)
	}
	crashpoint.At("ipam-add-committed")
	slog.Info("allocated", "network", conf.Pool.Network, "owner", alloc.Owner.String(), "ips", ipList(alloc))
	return cni.AsVersion(Result(alloc, conf.Routes), conf.CNIVersion)
}

// Del releases what the attachment holds. Nothing held, or no store at
// all, is success: runtimes call DEL more than once.
func Del(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData, os.Getenv)
	if err != nil {
		return err
	}
	if !storeExists(conf.StorePath) {
		return nil
	}
	store, err := openStore(conf)
	if err != nil {
		return err
	}
	defer closeStore(store)
	alloc, found, err := store.Release(conf.Pool.Network, owner(args, conf))
	if err != nil {
		return cni.Wrap(cni.CodeIOFailure, err, "release the addresses of %s in network %q", args.ContainerID, conf.Pool.Network)
	}
	if found {
		crashpoint.At("ipam-del-committed")
		slog.Info("released", "network", alloc.Network, "owner", alloc.Owner.String(), "ips", ipList(alloc))
	}
	return nil
}

// Check verifies that the attachment holds exactly the addresses of
// this network that prevResult reports.
func Check(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData, os.Getenv)
	if err != nil {
		return err
	}
	prev, err := prevResult(args.StdinData)
	if err != nil {
		return err
	}
	store, err := openStore(conf)
	if err != nil {
		return err
	}
	defer closeStore(store)
	o := owner(args, conf)
	alloc, found, err := store.Lookup(conf.Pool.Network, o)
	if err != nil {
		return cni.Wrap(cni.CodeIOFailure, err, "look up the addresses of %s in network %q", o, conf.Pool.Network)
	}
	if !found {
		alloc.Owner = o
	}
	return CheckHeld(conf.Pool, alloc, prev)
}

// GC releases every allocation of the network whose attachment is not
// among the valid attachments the runtime lists.
func GC(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData, os.Getenv)
	if err != nil {
		return err
	}
	valid, err := cni.ValidAttachments(args.StdinData)
	if err != nil {
		return err
	}
	if !storeExists(conf.StorePath) {
		return nil
	}
	store, err := openStore(conf)
	if err != nil {
		return err
	}
	defer closeStore(store)
	gone, err := store.GC(conf.Pool.Network, func(o ipam.Owner) bool {
		return valid[cni.Attachment{ContainerID: o.ContainerID, IfName: o.IfName}]
	})
	if err != nil {
		return cni.Wrap(cni.CodeIOFailure, err, "collect garbage in network %q", conf.Pool.Network)
	}
	if len(gone) > 0 {
		crashpoint.At("ipam-gc-committed")
	}
	for _, a := range gone {
		slog.Info("released by GC", "network", conf.Pool.Network, "owner", a.Owner.String(), "ips", ipList(a))
	}
	return nil
}

// Status succeeds when an ADD could be served now: the store opens and a
// write transaction commits.
func Status(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData, os.Getenv)
	if err != nil {
		return err
	}
	store, err := ipam.Open(conf.StorePath, conf.LockTimeout)
	if err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "IPAM store unusable: %v", err)
	}
	defer closeStore(store)
	if err := store.Probe(); err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "IPAM store %s cannot be written: %v", conf.StorePath, err)
	}
	return nil
}

func owner(args *skel.CmdArgs, conf *Config) ipam.Owner {
	return ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName, ID: conf.ID}
}

// openStore opens the store for a verb. A lock held too long by other
// plugin processes is worth retrying (code 11); anything else is an I/O
// failure.
func openStore(conf *Config) (*ipam.Store, error) {
	store, err := ipam.Open(conf.StorePath, conf.LockTimeout)
	if errors.Is(err, ipam.ErrLocked) {
		return nil, cni.Errorf(cni.CodeTryAgainLater, "%v; try again", err)
	}
	if err != nil {
		return nil, cni.Errorf(cni.CodeIOFailure, "%v", err)
	}
	crashpoint.At("ipam-store-opened")
	return store, nil
}

func closeStore(s *ipam.Store) {
	if err := s.Close(); err != nil {
		slog.Warn("close IPAM store", "path", s.Path(), "err", err)
	}
}

// storeExists tells DEL and GC that there is nothing to release, without
// creating a store (or failing on an unwritable directory) to find out.
func storeExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// allocateError gives an allocation failure its CNI code. An address that
// cannot be had is blamed on the field that asked for it.
func allocateError(err error, network string, reqs []Request) error {
	var exhausted *ipam.ExhaustedError
	var taken *ipam.TakenError
	var conflict *ipam.ConflictError
	switch {
	case errors.As(err, &exhausted):
		return cni.Errorf(cni.CodeAddressesExhausted, "%v", err)
	case errors.As(err, &taken):
		return cni.FieldError(requestField(reqs, taken.Addr), "%v", err)
	case errors.As(err, &conflict):
		return cni.FieldError(requestField(reqs, conflict.Want), "%v", err)
	}
	return cni.Wrap(cni.CodeIOFailure, err, "allocate addresses in network %q", network)
}

func requestField(reqs []Request, a netip.Addr) string {
	for _, r := range reqs {
		if r.Addr == a {
			return r.Field
		}
	}
	return "ips"
}

func ipList(a ipam.Allocation) []string {
	out := make([]string, len(a.IPs))
	for i, ip := range a.IPs {
		out[i] = ip.Address.String()
	}
	return out
}
