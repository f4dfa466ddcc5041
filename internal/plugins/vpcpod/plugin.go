// Package vpcpod is the vpc-pod CNI plugin: it gives a Kubernetes pod an
// address of one of its node's ENIs, which the node agent vpcnetd hands
// out over a unix-socket gRPC API (internal/node/nodeapi), and routes it to
// the pod over a veth, as amazon-vpc-cni-k8s's aws-cni does. No bridge, no
// overlay, no NAT.
//
// In the pod: the address as a /32 on CNI_IFNAME, an on-link route to
// 169.254.1.1, the default route through it, and a permanent neighbour
// entry mapping 169.254.1.1 to the host veth's MAC. On the node: a /32
// route to the pod out of the host veth, a rule `512: to POD lookup main`,
// and for an address of a secondary ENI `1536: from POD lookup TABLE`, so
// the pod's traffic leaves through its own ENI.
//
// The host veth is named (nodeapi.HostVethName), addressed and labelled
// after the attachment, so that DEL, GC and a retried ADD find it from the
// node alone; the pod's address is read back from its route, so that DEL
// cleans the node even when vpcnetd is down (vpcnetd releases the address
// when it next runs GC or reconciles).
package vpcpod

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// Steps after which a crash leaves partial state (see crashpoint.At).
const (
	stepAssigned     = "vpc-pod: address assigned"
	stepStale        = "vpc-pod: earlier veth removed"
	stepVeth         = "vpc-pod: veth created"
	stepLabelled     = "vpc-pod: veth labelled"
	stepHostRoute    = "vpc-pod: host route added"
	stepRules        = "vpc-pod: rules added"
	stepPodAddress   = "vpc-pod: pod address set"
	stepPodRoutes    = "vpc-pod: pod routes set"
	stepRulesRemoved = "vpc-pod: rules removed"
	stepVethRemoved  = "vpc-pod: veth removed"
	stepReleased     = "vpc-pod: address released"
)

// Verbs are the CNI verbs, for cni.Main.
var Verbs = cni.Verbs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

// rollback is what a failed ADD undoes, newest first.
type rollback []func()

func (r *rollback) add(f func()) { *r = append(*r, f) }

func (r rollback) run() {
	for i := len(r) - 1; i >= 0; i-- {
		r[i]()
	}
}

// Add asks vpcnetd for the pod's address and routes it to the pod. It runs
// in the node's namespace. A retried ADD gets the same address from
// vpcnetd and starts the kernel work over on a clean slate, so it
// converges; a failed ADD removes the veth and its rules and releases the
// address.
func Add(ctx context.Context, args *skel.CmdArgs) (_ types.Result, err error) {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	if conf.RawPrevResult != nil {
		return nil, cni.FieldError("prevResult", "vpc-pod gives the pod its interface and address and must be the first plugin of a chain")
	}
	pod, err := parsePodArgs(args.Args)
	if err != nil {
		return nil, err
	}
	if err := netops.ValidateIfName(args.IfName); err != nil {
		return nil, cni.EnvError("CNI_IFNAME", "%v", err)
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return nil, err
	}
	defer netns.Close()
	a := newAttachment(conf.Name, args.ContainerID, args.IfName, conf.VethPrefix)
	log, closeLog := conf.logger("container", args.ContainerID, "ifname", args.IfName, "pod", pod.namespace+"/"+pod.name)
	defer closeLog()

	ag, err := newAgent(conf.Socket)
	if err != nil {
		return nil, err
	}
	defer ag.close() // after the rollback, which may release the address

	var undo rollback
	defer func() {
		if err != nil {
			log.Warn("ADD failed, undoing", "err", err)
			undo.run()
		}
	}()
	callCtx, cancel := context.WithTimeout(ctx, conf.addTimeout)
	reply, err := ag.AddNetwork(callCtx, &nodeapi.AddNetworkRequest{
		Attachment:       a.api,
		Netns:            args.Netns,
		PodNamespace:     pod.namespace,
		PodName:          pod.name,
		PodUid:           pod.uid,
		InfraContainerId: pod.infraContainerID,
	})
	cancel()
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled {
			// vpcnetd may have assigned an address after we stopped
			// waiting: give it back.
			release(ctx, ag, a, args.Netns, pod, log)
		}
		return nil, ag.failure("AddNetwork", err)
	}
	undo.add(func() { release(ctx, ag, a, args.Netns, pod, log) })
	crashpoint.At(stepAssigned)
	plan, err := planPod(reply, int(conf.MTU))
	if err != nil {
		return nil, err
	}

	// A retried ADD (after a timeout or crash) starts over on a clean slate.
	if _, err := removeAttachmentVeth(a); err != nil {
		return nil, err
	}
	crashpoint.At(stepStale)

	veth, err := createVeth(a, netns, args.IfName, plan.mtu)
	if err != nil {
		return nil, err
	}
	undo.add(func() {
		if _, err := removeVeth(veth); err != nil {
			log.Error("cannot remove the veth of a failed ADD", "veth", veth.Name, "err", err)
		}
	})
	crashpoint.At(stepVeth)
	if err := labelVeth(veth, a, netns, args.IfName); err != nil {
		return nil, err
	}
	crashpoint.At(stepLabelled)

	// Rules go with the veth in removeVeth, found from its route; until the
	// route exists there are none.
	if err := configureHost(veth, plan, ruleLock(conf.Socket)); err != nil {
		return nil, err
	}
	podLink, err := configurePodIn(netns, args.IfName, plan, veth.HardwareAddr)
	if err != nil {
		return nil, err
	}
	log.Info("pod connected", "veth", veth.Name, "address", plan.addr, "table", plan.table, "mtu", plan.mtu, "eni", reply.GetEniId())

	res := buildResult(
		iface{name: veth.Name, mac: veth.HardwareAddr.String()},
		iface{name: args.IfName, mac: podLink.Attrs().HardwareAddr.String(), sandbox: args.Netns},
		plan)
	return cni.AsVersion(res, conf.CNIVersion)
}

// release gives a failed ADD's address back to vpcnetd.
func release(ctx context.Context, ag *agent, a attachment, netns string, pod podArgs, log *slog.Logger) {
	callCtx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	_, err := ag.DelNetwork(callCtx, &nodeapi.DelNetworkRequest{Attachment: a.api, Netns: netns, PodNamespace: pod.namespace, PodName: pod.name})
	if err != nil {
		log.Error("cannot release the address of a failed ADD; vpcnetd releases it at its next GC", "err", ag.failure("DelNetwork", err))
	}
}

func openNetns(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, cni.EnvError("CNI_NETNS", "empty")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, cni.Errorf(cni.CodeInvalidNetNS, "CNI_NETNS %q: %v", path, err)
	}
	return n, nil
}

// Del removes the pod's host veth (its pod end and route go with it) and
// rules, then releases the address. It succeeds when there is nothing
// left to do: an empty CNI_NETNS, a namespace that is gone (the veth died
// with it: the rules are then found as those without a route), no
// prevResult, a second DEL. When vpcnetd cannot be reached it still cleans
// the node and succeeds: vpcnetd releases the address when it next runs GC
// or reconciles against the host veths.
func Del(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	pod, err := parsePodArgs(args.Args)
	if err != nil {
		return err
	}
	a := newAttachment(conf.Name, args.ContainerID, args.IfName, conf.VethPrefix)
	log, closeLog := conf.logger("container", args.ContainerID, "ifname", args.IfName)
	defer closeLog()

	// The kernel goes first: an address must not be handed out again while
	// a veth still carries it.
	addrs, err := removeAttachmentVeth(a)
	if err != nil {
		return err
	}
	crashpoint.At(stepVethRemoved)

	ag, err := newAgent(conf.Socket)
	if err != nil {
		return err
	}
	defer ag.close()
	callCtx, cancel := context.WithTimeout(ctx, agentTimeout)
	reply, err := ag.DelNetwork(callCtx, &nodeapi.DelNetworkRequest{Attachment: a.api, Netns: args.Netns, PodNamespace: pod.namespace, PodName: pod.name})
	cancel()
	switch {
	case err != nil && ag.unreachable(err):
		log.Warn("vpcnetd is unreachable: the node is clean, vpcnetd releases the address at its next GC",
			"addresses", addrs, "err", ag.failure("DelNetwork", err))
		if len(addrs) == 0 {
			// The veth was gone already (with the pod's namespace):
			// its rules are the ones without a route.
			return sweepOrphanRules(ruleLock(conf.Socket))
		}
		return nil
	case err != nil:
		return ag.failure("DelNetwork", err)
	}
	crashpoint.At(stepReleased)
	if addr, perr := netip.ParseAddr(reply.GetIpv4Address()); reply.GetFound() && perr == nil && len(addrs) == 0 {
		// The veth died with the namespace; its rules did not.
		if err := removeUnroutedRules(addr, ruleLock(conf.Socket)); err != nil {
			return err
		}
	}
	return nil
}

// removeUnroutedRules removes the rules of addr unless a route to it
// exists, which would mean another pod holds it now.
func removeUnroutedRules(addr netip.Addr, lock string) error {
	unlock, err := lockRules(lock)
	if err != nil {
		return err
	}
	defer unlock()
	routes, err := netops.TableRoutes(0, 0)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "list the main routing table")
	}
	for _, r := range routes {
		if r.Dst == netip.PrefixFrom(addr, 32) {
			return nil
		}
	}
	return removeRulesFor(addr)
}

// Check compares the node and the pod with vpcnetd's assignment: the
// address, routes, neighbour entry, host route and rules.
func Check(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := cni.PrevResult(&conf.NetConf, true)
	if err != nil {
		return err
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	a := newAttachment(conf.Name, args.ContainerID, args.IfName, conf.VethPrefix)
	ag, err := newAgent(conf.Socket)
	if err != nil {
		return err
	}
	defer ag.close()
	callCtx, cancel := context.WithTimeout(ctx, agentTimeout)
	reply, err := ag.CheckNetwork(callCtx, &nodeapi.CheckNetworkRequest{Attachment: a.api})
	cancel()
	if err != nil {
		return ag.failure("CheckNetwork", err)
	}
	plan, err := planPod(reply, int(conf.MTU))
	if err != nil {
		return err
	}
	obs, err := observe(a, netns, args.IfName)
	if err != nil {
		return err
	}
	problems := plan.problems(a, args.IfName, obs)
	problems = append(problems, resultProblems(prev, args.IfName, plan)...)
	if len(problems) > 0 {
		return checkFailed(problems)
	}
	return nil
}

// GC removes the network's host veths whose attachment is not in
// cni.dev/valid-attachments, labelled or left unlabelled by a crashed ADD,
// with their rules, and the rules of veths gone with their namespaces;
// then it asks vpcnetd to release every address of the network not held
// by a valid attachment. vpcnetd unreachable is code 11 after the node is
// cleaned: the addresses are still held.
func GC(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	keep, err := cni.ValidAttachments(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := conf.logger()
	defer closeLog()
	stale, err := staleVeths(conf.Name, conf.VethPrefix, keep)
	if err != nil {
		return err
	}
	for _, l := range stale {
		if _, err := removeVeth(l); err != nil {
			return err
		}
	}
	if err := sweepOrphanRules(ruleLock(conf.Socket)); err != nil {
		return err
	}
	valid := make([]*nodeapi.Attachment, 0, len(keep))
	for k := range keep {
		valid = append(valid, &nodeapi.Attachment{Network: conf.Name, ContainerId: k.ContainerID, IfName: k.IfName})
	}
	ag, err := newAgent(conf.Socket)
	if err != nil {
		return err
	}
	defer ag.close()
	callCtx, cancel := context.WithTimeout(ctx, agentTimeout)
	reply, err := ag.GarbageCollect(callCtx, &nodeapi.GarbageCollectRequest{Network: conf.Name, Valid: valid})
	cancel()
	if err != nil {
		return ag.failure("GarbageCollect", err)
	}
	log.Info("garbage collected", "veths", len(stale), "released", reply.GetReleased())
	return nil
}

// Status reports whether an ADD could succeed now, which is vpcnetd's to
// say: anything short of ready is code 50, "not available". A node that
// does not forward IPv4 is code 51, "limited connectivity": ADDs succeed,
// but their pods reach only the node itself.
func Status(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	ag, err := newAgent(conf.Socket)
	if err != nil {
		return err
	}
	defer ag.close()
	callCtx, cancel := context.WithTimeout(ctx, agentTimeout)
	reply, err := ag.Status(callCtx, &nodeapi.StatusRequest{})
	cancel()
	if err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "%s", ag.failure("Status", err).Msg)
	}
	if !reply.GetReady() {
		return cni.Errorf(cni.CodePluginNotAvailable, "vpcnetd is not ready: %s (free %d, assigned %d, max pods %d)",
			reply.GetReason(), reply.GetFree(), reply.GetAssigned(), reply.GetMaxPods())
	}
	return forwardingStatus()
}

// ipForward is the node's IPv4 forwarding switch, read in the plugin's
// network namespace (the node's).
const ipForward = "/proc/sys/net/ipv4/ip_forward"

func forwardingStatus() error {
	data, err := os.ReadFile(ipForward)
	if err != nil {
		return cni.Errorf(cni.CodeLimitedConnectivity, "cannot tell whether the node forwards IPv4: %v", err)
	}
	if strings.TrimSpace(string(data)) != "1" {
		return cni.Errorf(cni.CodeLimitedConnectivity, "the node does not forward IPv4 (%s is %s): pods would reach only the node; vpcnetd or the node's image should turn it on",
			ipForward, strings.TrimSpace(string(data)))
	}
	return nil
}

// logger is the verb's logger: the process's, plus the config's log file
// when it names one.
func (c *Config) logger(attrs ...any) (*slog.Logger, func()) {
	base := slog.Default()
	if c.logFile == "" {
		return base.With(attrs...), func() {}
	}
	var h slog.Handler
	closeFn := func() {}
	if c.logFile == "stderr" {
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.logLevel})
	} else {
		f, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			base.Warn("cannot open the config's log file", "path", c.logFile, "err", err)
			return base.With(attrs...), func() {}
		}
		h = slog.NewJSONHandler(f, &slog.HandlerOptions{Level: c.logLevel})
		closeFn = func() { f.Close() }
	}
	l := slog.New(slog.NewMultiHandler(base.Handler(), h)).With("component", "vpc-pod", "pid", os.Getpid()).With(attrs...)
	return l, closeFn
}

func checkFailed(problems []string) error {
	msg := "CHECK failed: "
	for i, p := range problems {
		if i > 0 {
			msg += "; "
		}
		msg += p
	}
	return cni.Errorf(cni.CodeInternal, "%s", msg)
}
