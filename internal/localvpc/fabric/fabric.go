// Package fabric is the datapath of the local VPC: it makes the kernel hold
// the network that the control plane's EC2 model describes, with real
// namespaces, veths, routes and nftables rules, so that a wrong datapath
// fails on one machine the way it would on AWS.
//
// The control plane hands Apply the whole desired datapath as a Spec after
// every change; Apply compares it with what the kernel holds and changes only
// the difference. A namespace "<name>-fabric" plays the VPC router. Each
// instance is a namespace "<name>-<instance ID>", and each attached ENI a veth
// pair: one end in the fabric, the other in the instance as eth<device index>
// with the ENI's MAC and MTU.
//
// The VPC is routed, not bridged, as on AWS: the fabric holds a /32 (/128)
// route and a static neighbour entry for every address assigned to an ENI and
// a route for every delegated prefix, answers ARP for the rest of the subnet
// (proxy ARP) and NDP for what an instance sees as on-link (proxy NDP
// entries), so a packet reaches the one ENI its destination is assigned to
// and nothing else. There is no default route: nothing leaves the VPC, and no
// link reaches the root namespace. nftables in the fabric enforce the
// source/destination check and the security groups (see ruleset.go).
//
// Around Apply: Listen opens the control plane's sockets on the fabric's own
// addresses (IMDS, the in-VPC EC2 endpoint); a Watcher reports ENIs whose
// device died with a namespace it had been moved into, for the control
// plane to Apply again; Destroy removes everything.
//
// Apply serialises calls for one VPC name within a process; one process
// (the control plane) owns a local VPC at a time.
package fabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
)

var locks sync.Map // local VPC name -> *sync.Mutex

func lock(name string) (unlock func()) {
	m, _ := locks.LoadOrStore(name, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Apply makes the kernel hold the datapath of spec, from whatever state it
// is in: nothing, a complete older datapath, or the leftovers of an
// interrupted Apply. It changes only what differs, in this order: the
// fabric, instance namespaces, ENI devices (first, so an attachment shows up
// quickly), routes and neighbour entries, the firewall, and last the
// namespaces of instances that are gone. A failure on one ENI does not stop
// the others; every failure is returned, joined.
func Apply(ctx context.Context, spec Spec) error {
	want, err := desiredState(spec)
	if err != nil {
		return err
	}
	defer lock(spec.Name)()

	fab, err := openFabric(want.Fabric)
	if err != nil {
		return err
	}
	defer fab.close()
	if err := fab.ensureLoopback(want.LoAddrs); err != nil {
		return err
	}
	existing, err := instanceNamespaces(spec.Name)
	if err != nil {
		return err
	}
	for _, name := range want.Instances {
		if !slices.Contains(existing, name) {
			if err := createInstance(name); err != nil {
				return err
			}
		}
	}
	if want.External != "" {
		if n, err := ns.GetNS(netops.NamedNSPath(want.External)); err == nil {
			n.Close()
		} else if err := createInstance(want.External); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	var errs []error
	errs = append(errs, fab.reconcileDevices(ctx, want.Devices)...)
	if err := fab.reconcileRouting(want); err != nil {
		errs = append(errs, err)
	}
	if err := fab.loadFirewall(ctx, want.Firewall); err != nil {
		errs = append(errs, err)
	}
	for _, name := range existing {
		if !slices.Contains(want.Instances, name) {
			if err := netops.DeleteNamedNS(name); err != nil {
				errs = append(errs, fmt.Errorf("failed to remove the namespace of a terminated instance: %w", err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("failed to apply the datapath of local VPC %s: %w", spec.Name, errors.Join(errs...))
	}
	return nil
}

// Destroy removes every namespace, device and rule of the local VPC name. It
// is safe on a partial datapath and when nothing exists. ENI devices are
// deleted explicitly rather than left to die with the fabric namespace: a
// socket still open in the fabric (a Listen listener, a Watch) keeps the
// namespace, and with it the devices, alive after it is unpinned.
func Destroy(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid local VPC name %q", name)
	}
	defer lock(name)()
	loadedTables.Delete(FabricNamespace(name))
	var errs []error
	if fab, err := ns.GetNS(netops.NamedNSPath(FabricNamespace(name))); err == nil {
		errs = append(errs, removeAllDevices(fab)...)
		fab.Close()
	}
	names, err := instanceNamespaces(name)
	if err != nil {
		return err
	}
	for _, n := range append(names, FabricNamespace(name), ExternalNamespace(name)) {
		if err := netops.DeleteNamedNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("failed to destroy local VPC %s: %w", name, errors.Join(errs...))
	}
	return nil
}

// Listen opens a listening socket inside the fabric namespace of the local
// VPC name, for the control plane (which runs in the root namespace) to
// serve instances on a fabric-local address: IMDS on 169.254.169.254:80 and
// [fd00:ec2::254]:80, the in-VPC EC2 endpoint. The address must be one of
// the spec's LocalAddrs, applied. No NAT stands between the instance and
// the socket, so a connection's remote address is the instance's own.
// The listener keeps the fabric namespace alive until it is closed.
func Listen(name, network, address string) (net.Listener, error) {
	path := netops.NamedNSPath(FabricNamespace(name))
	var l net.Listener
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s %s in the fabric of local VPC %s: %w", network, address, name, err)
	}
	return l, nil
}

// instanceNamespaces returns the instance namespaces of the local VPC name
// that exist.
func instanceNamespaces(name string) ([]string, error) {
	all, err := netops.ListNamedNS(name + "-")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range all {
		if n != FabricNamespace(name) && isVPCNamespace(name, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// createInstance creates an instance's namespace (or the external host's)
// with its loopback up, as an operating system brings it up at boot. One
// that exists is kept.
func createInstance(name string) error {
	n, err := netops.EnsureNamedNS(name)
	if err != nil {
		return fmt.Errorf("failed to create instance namespace: %w", err)
	}
	defer n.Close()
	if err := netops.LoopbackUp(n); err != nil {
		_ = netops.DeleteNamedNS(name) // so the next Apply starts it over
		return err
	}
	return nil
}

// Dial connects from inside the fabric namespace of the local VPC name, for
// the control plane to reach a service that listens there (the cluster's
// API server on its endpoint ENI's address). The socket stays in the
// fabric namespace; only the dial needs the thread switched.
func Dial(ctx context.Context, name, network, address string) (net.Conn, error) {
	path := netops.NamedNSPath(FabricNamespace(name))
	var c net.Conn
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to connect to %s %s in the fabric of local VPC %s: %w", network, address, name, err)
	}
	return c, nil
}
