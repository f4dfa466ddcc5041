// Package vpceni is the vpc-eni CNI plugin: it gives a container a whole
// elastic network interface (ENI), as ECS does for awsvpc tasks.
//
// ADD finds the ENI by MAC in the namespace the plugin runs in (the host),
// records its host name on the link, moves it into CNI_NETNS, renames it to
// CNI_IFNAME and sets MTU, addresses, blackholes for the instance metadata
// service, link up and a default route per gateway. DEL moves it back under
// its host name. A retried ADD converges, a failed ADD undoes itself, and
// DEL converges from wherever an ADD or DEL stopped: every step finds the
// ENI by MAC, wherever it is, and the record on the link says where it
// goes home to.
//
// The config accepts our camelCase fields and, as a drop-in replacement,
// the fields the ECS agent writes for ecs-eni and those of
// amazon-vpc-cni-plugins' vpc-eni (see config.go).
package vpceni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// Verbs are the plugin's CNI verbs, for cni.Main.
var Verbs = cni.Verbs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

// Add moves the ENI into the container and configures it, and returns the
// result in the config's version. Error codes: 6 and 7 for the config, 4
// for CNI_IFNAME or CNI_ARGS, 8 for CNI_NETNS, 11 when no link has the MAC
// (the ENI may not be attached yet), 999 when the kernel refuses a step;
// the ENI is then back in the host namespace.
func Add(_ context.Context, args *skel.CmdArgs) (types.Result, error) {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	prev, err := cni.PrevResult(&conf.NetConf, false)
	if err != nil {
		return nil, err
	}
	podArgs, err := checkEnv(args)
	if err != nil {
		return nil, err
	}
	ctr, host, err := openNamespaces(args.Netns)
	if err != nil {
		return nil, err
	}
	defer ctr.Close()
	defer host.Close()

	log := logger(args, conf, podArgs)
	if err := attach(conf, args, host, ctr, log); err != nil {
		return nil, err
	}
	log.Info("ENI attached to the container")
	return cni.AsVersion(buildResult(conf, prev, args.IfName, args.Netns), conf.CNIVersion)
}

// attach does the work of ADD; on failure it gives the ENI back to the host.
func attach(conf *Config, args *skel.CmdArgs, host, ctr ns.NetNS, log *slog.Logger) error {
	link, inHost, err := locate(conf.MAC, ctr)
	if errors.Is(err, errNoENI) {
		return cni.Errorf(cni.CodeTryAgainLater,
			"no link with MAC %s in the host network namespace (%s) nor in CNI_NETNS %s: is the ENI attached to this instance, and is the \"mac\" right?",
			conf.MAC, namespaceID(), args.Netns)
	}
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "find the ENI with MAC %s", conf.MAC)
	}
	if inHost {
		if err := checkNameFree(ctr, args.IfName); err != nil {
			return cni.Wrap(cni.CodeInternal, err, "check CNI_IFNAME in the container")
		}
		log.Info("found the ENI in the host namespace", "hostName", link.Attrs().Name)
	} else {
		log.Info("found the ENI already in the container: finishing an earlier ADD", "name", link.Attrs().Name)
	}
	crashpoint.At(stepFound)

	err = plugIn(conf, args.IfName, link, inHost, ctr)
	if err == nil {
		return nil
	}
	if undoErr := detach(conf.MAC, host, ctr, conf.BlockInstanceMetadata); undoErr != nil {
		log.Error("failed to give the ENI back to the host after a failed ADD", "err", undoErr)
		return cni.Wrap(cni.CodeInternal, fmt.Errorf("%w (and giving it back to the host failed too: %v)", err, undoErr),
			"attach the ENI with MAC %s as %s", conf.MAC, args.IfName)
	}
	return cni.Wrap(cni.CodeInternal, err, "attach the ENI with MAC %s as %s (it is back in the host namespace)", conf.MAC, args.IfName)
}

// plugIn records, moves and configures the ENI; the first two only when it
// is still in the host.
func plugIn(conf *Config, ifName string, link netlink.Link, inHost bool, ctr ns.NetNS) error {
	if inHost {
		if err := recordHost(link); err != nil {
			return err
		}
		crashpoint.At(stepRecorded)
		if err := moveIn(link, ctr); err != nil {
			return err
		}
		crashpoint.At(stepMoved)
	}
	return ctr.Do(func(ns.NetNS) error { return configure(conf, ifName) })
}

// Del gives the ENI back to the host namespace under its host name. It
// succeeds when there is nothing to do: an empty CNI_NETNS, a namespace
// that is gone, no prevResult, an ENI already home or not there at all.
// The config needs only the MAC (addresses may be left out).
func Del(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeDelConfig(args.StdinData)
	if err != nil {
		return err
	}
	host, err := ns.GetCurrentNS()
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "open the plugin's own network namespace")
	}
	defer host.Close()
	log := logger(args, conf, nil)

	// Without the container namespace there is nothing to take out of it,
	// but the host side may still need tidying: a namespace that died
	// with the ENI in it hands a physical device back to the host.
	var ctr ns.NetNS
	if args.Netns != "" {
		if n, err := ns.GetNS(args.Netns); err != nil {
			log.Info("container namespace is gone; tidying the host side only", "netns", args.Netns, "err", err)
		} else if same, _ := sameNamespace(n, host); same {
			n.Close()
			log.Warn("CNI_NETNS is the plugin's own namespace; tidying the host side only", "netns", args.Netns)
		} else {
			ctr = n
			defer ctr.Close()
		}
	}
	if err := detach(conf.MAC, host, ctr, conf.BlockInstanceMetadata); err != nil {
		return cni.Wrap(cni.CodeInternal, err, "give the ENI with MAC %s back to the host", conf.MAC)
	}
	log.Info("ENI back in the host namespace, or not there to move")
	return nil
}

// Check compares the ENI in the container with the prevResult of ADD and
// the config: name and MAC, link up (down for stayDown), MTU, addresses,
// routes via the gateways, blackholes. Each mismatch is one sentence of the
// error (code 999: the spec has no code for a failed CHECK).
func Check(_ context.Context, args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := cni.PrevResult(&conf.NetConf, true)
	if err != nil {
		return err
	}
	if _, err := checkEnv(args); err != nil {
		return err
	}
	ctr, host, err := openNamespaces(args.Netns)
	if err != nil {
		return err
	}
	defer ctr.Close()
	defer host.Close()

	want, err := expectedState(conf, prev, args.IfName)
	if err != nil {
		return cni.FieldError("prevResult", "%v", err)
	}
	got, err := observe(ctr, conf.MAC)
	if errors.Is(err, errNoENI) {
		where := "it is not in the host namespace either"
		if l, _ := findByMAC(conf.MAC); l != nil {
			where = fmt.Sprintf("it is in the host namespace as %s", l.Attrs().Name)
		}
		return cni.Errorf(cni.CodeInternal, "CHECK failed: no link with MAC %s in CNI_NETNS %s; %s", conf.MAC, args.Netns, where)
	}
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "read the ENI in %s", args.Netns)
	}
	if problems := compareState(want, got); len(problems) > 0 {
		return cni.Errorf(cni.CodeInternal, "CHECK failed for %s in %s: %s", args.IfName, args.Netns, strings.Join(problems, "; "))
	}
	return nil
}

// GC has nothing to collect: vpc-eni keeps no state outside the ENI, and an
// ENI whose container is gone either returned to the host with its
// namespace or waits there for its DEL. It only checks the attachment list.
func GC(_ context.Context, args *skel.CmdArgs) error {
	_, err := cni.ValidAttachments(args.StdinData)
	return err
}

// Status reports the plugin available when it can talk to the kernel's
// netlink in its namespace, all an ADD needs besides the ENI itself.
func Status(context.Context, *skel.CmdArgs) error {
	if _, err := netops.ListLinks(); err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "cannot list links over netlink: %v", err)
	}
	return nil
}

// podArgs are the CNI_ARGS that Kubernetes runtimes pass (names fixed by
// them); only logged.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// checkEnv validates CNI_IFNAME and CNI_ARGS (code 4).
func checkEnv(args *skel.CmdArgs) (*podArgs, error) {
	if err := netops.ValidateIfName(args.IfName); err != nil {
		return nil, cni.EnvError("CNI_IFNAME", "%v", err)
	}
	var pa podArgs
	if err := types.LoadArgs(args.Args, &pa); err != nil {
		return nil, cni.EnvError("CNI_ARGS", "%v (add IgnoreUnknown=1 to pass other keys)", err)
	}
	return &pa, nil
}

// openNamespaces opens the container's namespace (code 4 when CNI_NETNS is
// empty, 8 when it is not a namespace or is the plugin's own) and the
// plugin's, which is the host's.
func openNamespaces(netns string) (ctr, host ns.NetNS, err error) {
	if netns == "" {
		return nil, nil, cni.EnvError("CNI_NETNS", "missing: the path of the container's network namespace is required")
	}
	ctr, err = ns.GetNS(netns)
	if err != nil {
		return nil, nil, cni.Errorf(cni.CodeInvalidNetNS, "CNI_NETNS %q: %v", netns, err)
	}
	host, err = ns.GetCurrentNS()
	if err != nil {
		ctr.Close()
		return nil, nil, cni.Wrap(cni.CodeInternal, err, "open the plugin's own network namespace")
	}
	if same, err := sameNamespace(ctr, host); err != nil || same {
		ctr.Close()
		host.Close()
		if err != nil {
			return nil, nil, cni.Wrap(cni.CodeInternal, err, "compare CNI_NETNS with the plugin's namespace")
		}
		return nil, nil, cni.Errorf(cni.CodeInvalidNetNS, "CNI_NETNS %q is the plugin's own network namespace, where the ENI comes from", netns)
	}
	return ctr, host, nil
}

// sameNamespace reports whether a and b are one namespace (same inode).
func sameNamespace(a, b ns.NetNS) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		return false, err
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

func logger(args *skel.CmdArgs, conf *Config, pa *podArgs) *slog.Logger {
	l := slog.Default().With("containerID", args.ContainerID, "ifname", args.IfName, "mac", conf.MAC.String())
	if conf.ENIID != "" {
		l = l.With("eniID", conf.ENIID)
	}
	if conf.ENIName != "" {
		l = l.With("eniName", conf.ENIName)
	}
	if pa != nil && pa.K8S_POD_NAME != "" {
		l = l.With("pod", string(pa.K8S_POD_NAMESPACE)+"/"+string(pa.K8S_POD_NAME))
	}
	return l
}
