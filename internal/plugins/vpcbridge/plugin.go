// Package vpcbridge is the vpc-bridge CNI plugin: it connects a container
// to a private bridge on the host so that it reaches host endpoints such as
// the task metadata and credentials endpoint (169.254.170.2), and nothing
// else. It plays the role of the ECS agent's ecs-bridge and accepts its
// config.
//
// Each ADD creates a veth pair: the host end, named, addressed and
// labelled after the attachment, becomes an isolated port of the bridge
// (created on first use, with a MAC derived from its name); the container
// end, containerIfName or else CNI_IFNAME, is labelled too and gets the
// address from the IPAM plugin named in ipam.type. The bridge holds the
// gateway address. The container gets an on-link route to the gateway and
// routes through it to the IPAM's destinations, but no route to the subnet;
// the bridge does not forward between isolated ports, and an nftables rule
// keeps the host from routing between them (firewall.go): containers on
// one bridge cannot reach each other.
//
// After another plugin in a chain (vpc-eni takes eth0), vpc-bridge names
// its container side from containerIfName and appends its interfaces,
// addresses and routes to the prevResult. Everything it removes it finds
// from the host end, never by a name in the container, which may be
// another plugin's.
package vpcbridge

import (
	"context"
	"log/slog"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// Steps of ADD after which a crash leaves partial state (see crashpoint.At).
// They carry the plugin's name so that a test killing vpc-bridge at a step
// never kills the IPAM plugin it runs, which inherits the environment.
const (
	stepBridge   = "vpc-bridge: bridge ready"
	stepStale    = "vpc-bridge: earlier veth removed"
	stepVeth     = "vpc-bridge: veth created"
	stepLabelled = "vpc-bridge: veth labelled"
	stepAttached = "vpc-bridge: veth attached"
	stepIPAM     = "vpc-bridge: address allocated"
	stepGateway  = "vpc-bridge: gateway on bridge"
	stepAddress  = "vpc-bridge: address configured"
	stepRoutes   = "vpc-bridge: routes configured"
)

// Verbs are the plugin's CNI verbs, for cni.Main.
var Verbs = cni.Verbs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

// Add connects the container to the bridge and returns the result in the
// config's version: the prevResult, if any, followed by vpc-bridge's part.
// It runs in the host namespace. A failed Add removes the veth and releases
// the address; the bridge, its gateway address and its nftables element,
// shared by every container, stay.
func Add(ctx context.Context, args *skel.CmdArgs) (_ types.Result, err error) {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	if err := requireIPAM(conf); err != nil {
		return nil, err
	}
	prev, err := cni.PrevResult(&conf.NetConf, false)
	if err != nil {
		return nil, err
	}
	ipam, err := findIPAM(conf, args)
	if err != nil {
		return nil, err
	}
	if err := netops.ValidateIfName(args.IfName); err != nil {
		return nil, cni.EnvError("CNI_IFNAME", "%v", err)
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return nil, cni.EnvError("CNI_NETNS", "cannot open namespace %q: %v", args.Netns, err)
	}
	defer netns.Close()
	a := attachmentOf(conf, args)
	ctrIfName := conf.containerIfName(args)
	log := slog.With("container", args.ContainerID, "ifname", args.IfName, "containerIfName", ctrIfName, "bridge", conf.Bridge)

	var undo rollback
	defer func() {
		if err != nil {
			log.Warn("ADD failed, undoing", "err", err)
			undo.run()
		}
	}()

	br, err := ensureBridge(conf)
	if err != nil {
		return nil, err
	}
	crashpoint.At(stepBridge)

	// A retried ADD (after a timeout or crash) starts over on a clean slate;
	// the IPAM plugin gives the attachment the same address again.
	if err := removeAttachmentVeth(a); err != nil {
		return nil, err
	}
	crashpoint.At(stepStale)

	veth, err := createVeth(conf, a, netns, ctrIfName)
	if err != nil {
		return nil, err
	}
	undo.add(func() { _ = deleteLink(veth) })
	crashpoint.At(stepVeth)

	if err := labelVeth(veth, a, netns, ctrIfName); err != nil {
		return nil, err
	}
	crashpoint.At(stepLabelled)

	if err := attach(veth, br); err != nil {
		return nil, err
	}
	crashpoint.At(stepAttached)

	allocated, err := ipam.add(ctx)
	if err != nil {
		return nil, err
	}
	undo.add(func() {
		if err := ipam.run(ctx, "DEL"); err != nil {
			log.Error("cannot release the address of a failed ADD", "err", err)
		}
	})
	crashpoint.At(stepIPAM)

	plan, err := planContainer(conf.IPAM.Type, allocated)
	if err != nil {
		return nil, err
	}
	if err := addGateways(br, plan); err != nil {
		return nil, err
	}
	crashpoint.At(stepGateway)

	ctrLink, err := configureContainerIn(netns, ctrIfName, plan)
	if err != nil {
		return nil, err
	}
	log.Info("container connected", "veth", veth.Name, "plan", plan.String())

	res := buildResult(prev,
		iface{name: br.Name, mac: br.HardwareAddr.String()},
		iface{name: veth.Name, mac: veth.HardwareAddr.String()},
		iface{name: ctrIfName, mac: ctrLink.Attrs().HardwareAddr.String(), sandbox: args.Netns},
		plan)
	return cni.AsVersion(res, conf.CNIVersion)
}

// attachmentOf is the attachment the verb is about. CNI_IFNAME, not the
// container side's name, is part of it, as the spec defines attachments.
func attachmentOf(conf *Config, args *skel.CmdArgs) attachment {
	return attachment{network: conf.Name, Attachment: cni.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}}
}

// rollback is what a failed ADD undoes, newest first.
type rollback []func()

func (r *rollback) add(f func()) { *r = append(*r, f) }

func (r rollback) run() {
	for i := len(r) - 1; i >= 0; i-- {
		r[i]()
	}
}

// Del disconnects the container and releases its address. It succeeds when
// there is nothing left to do: an empty CNI_NETNS, a namespace that is gone
// (its veth died with it), no ipam section (the ECS agent releases the
// address itself), a second DEL. It needs neither the namespace nor the
// prevResult: the attachment's host veth is found by its name, and
// deleting it takes the container end along. No link in the container is
// ever deleted by name: in a chain the name may be another plugin's.
func Del(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	// The link goes first: an address must not be handed out again while a
	// veth still carries it.
	if err := removeAttachmentVeth(attachmentOf(conf, args)); err != nil {
		return err
	}
	return runIPAM(ctx, conf, args, "DEL")
}

// Check verifies that the attachment is as the ADD left it and asks the
// IPAM plugin to check its side. The prevResult is the result of the
// chain's ADD; only vpc-bridge's part of it is checked here (ownPart), the
// earlier plugins check theirs.
func Check(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := requireIPAM(conf); err != nil {
		return err
	}
	prev, err := cni.PrevResult(&conf.NetConf, true)
	if err != nil {
		return err
	}
	ctrIfName := conf.containerIfName(args)
	own, err := ownPart(prev, ctrIfName)
	if err != nil {
		return cni.FieldError("prevResult", "%v", err)
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return cni.EnvError("CNI_NETNS", "cannot open namespace %q: %v", args.Netns, err)
	}
	defer netns.Close()
	br, err := netops.LookupBridge(conf.Bridge)
	if err != nil {
		return checkFailed("%v", err)
	}
	a := attachmentOf(conf, args)
	host, err := checkHostVeth(a, br)
	if err != nil {
		return err
	}
	err = netns.Do(func(ns.NetNS) error {
		return checkContainer(a, ctrIfName, conf.MTU, host.Attrs().Index, own)
	})
	if err != nil {
		return err
	}
	return runIPAM(ctx, conf, args, "CHECK")
}

// runIPAM runs a verb of the IPAM plugin, if the config names one.
func runIPAM(ctx context.Context, conf *Config, args *skel.CmdArgs, verb string) error {
	if conf.IPAM.Type == "" {
		return nil
	}
	p, err := findIPAM(conf, args)
	if err != nil {
		return err
	}
	return p.run(ctx, verb)
}

// GC removes the veths of this network whose attachment is not in
// cni.dev/valid-attachments, labelled or left unlabelled by a crashed ADD,
// then lets the IPAM plugin release their addresses. (A veth whose
// container namespace is gone needs no GC: it died with the namespace.)
func GC(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	keep, err := cni.ValidAttachments(args.StdinData)
	if err != nil {
		return err
	}
	stale, err := staleVeths(conf.Name, keep)
	if err != nil {
		return err
	}
	for _, l := range stale {
		if err := deleteLink(l); err != nil {
			return err
		}
	}
	return runIPAM(ctx, conf, args, "GC")
}

// Status reports whether an ADD could succeed now: nftables answers (an ADD
// that cannot isolate its container fails), the bridge exists with a free
// port or its name is free to create it, and the IPAM plugin is ready.
// Anything missing is code 50, "not available": vpc-bridge has no degraded
// mode in which ADDs succeed with less (code 51 would say so).
func Status(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := bridgeStatus(conf.Bridge); err != nil {
		return err
	}
	return runIPAM(ctx, conf, args, "STATUS")
}
