package vpceni

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// This file is the kernel side of the plugin: finding the ENI, moving it
// between the host and the container, configuring and reading it. The host
// namespace is always the one the plugin runs in.

// Steps of ADD, in order, for the crash tests (crashpoint.At). Each marks a
// point after which a crash leaves the ENI part way.
const (
	stepFound      = "found"
	stepRecorded   = "recorded"
	stepMoved      = "moved"
	stepRenamed    = "renamed"
	stepMTU        = "mtu"
	stepAddresses  = "addresses"
	stepBlackholes = "blackholes"
	stepUp         = "up"
	stepRoutes     = "routes"
)

// Steps of DEL.
const (
	stepReleased = "released" // flushed and down in the container
	stepReturned = "returned" // back in the host namespace
)

var (
	// errNoENI says the ENI is neither in the host namespace nor in the
	// container.
	errNoENI = errors.New("ENI not found")
)

// findByMAC returns the link with mac in the current namespace, or nil.
func findByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	link, err := netops.LinkByMAC(mac)
	if errors.Is(err, netops.ErrLinkNotFound) {
		return nil, nil
	}
	return link, err
}

// locate finds the ENI: in the host namespace, where an ADD starts, or in
// the container, where an interrupted ADD left it. The link returned
// belongs to whichever namespace inHost says.
func locate(mac net.HardwareAddr, ctr ns.NetNS) (link netlink.Link, inHost bool, err error) {
	if link, err = findByMAC(mac); err != nil || link != nil {
		return link, link != nil, err
	}
	err = ctr.Do(func(ns.NetNS) error {
		link, err = findByMAC(mac)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if link == nil {
		return nil, false, errNoENI
	}
	return link, false, nil
}

// checkNameFree fails when another link already holds ifName in the
// container, before anything has moved.
func checkNameFree(ctr ns.NetNS, ifName string) error {
	return ctr.Do(func(ns.NetNS) error {
		l, err := netops.LinkByName(ifName)
		if errors.Is(err, netops.ErrLinkNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("failed to look for %s in the container: %w", ifName, err)
		}
		return cni.EnvError("CNI_IFNAME", "%s is already taken in %s by a link with MAC %s", ifName, ctr.Path(), l.Attrs().HardwareAddr)
	})
}

// recordHost writes the link's host name, MTU and alias into its alias,
// unless a record is already there: then an earlier, interrupted ADD or
// DEL wrote it, and it still holds the values from before vpc-eni (the
// link's current name may be a temporary one).
func recordHost(link netlink.Link) error {
	attrs := link.Attrs()
	if _, ok := parseHostRecord(attrs.Alias); ok {
		return nil
	}
	rec := hostRecord{Name: attrs.Name, MTU: attrs.MTU, Alias: attrs.Alias}
	if err := netops.SetAlias(link, rec.String()); err != nil {
		return fmt.Errorf("failed to record the host name of %s in its alias: %w", attrs.Name, err)
	}
	return nil
}

// moveIn moves the ENI from the host into the container under a temporary
// name; configure gives it its final one. The two steps keep "moved" and
// "renamed" apart for the crash tests, and a name clash in the container
// then fails inside the container, where the undo looks.
func moveIn(link netlink.Link, ctr ns.NetNS) error {
	tmp, err := netops.RandomName("vpceni")
	if err != nil {
		return err
	}
	if _, err := netops.MoveLink(link, ctr, tmp); err != nil {
		return err
	}
	return nil
}

// configure sets up the ENI inside the container, the current namespace:
// name, MTU, addresses, blackholes, up, routes. Each step converges, so a
// retried ADD finishes what an interrupted one started.
func configure(conf *Config, ifName string) error {
	link, err := findByMAC(conf.MAC)
	if err != nil {
		return err
	}
	if link == nil {
		return fmt.Errorf("%w: the ENI left the container while it was being configured", errNoENI)
	}
	if link, err = netops.RenameLink(link, ifName); errors.Is(err, netops.ErrNameTaken) {
		return cni.EnvError("CNI_IFNAME", "%s is already taken in the container by another link", ifName)
	} else if err != nil {
		return err
	}
	crashpoint.At(stepRenamed)
	if conf.StayDown {
		return netops.SetLinkDown(link)
	}
	if conf.MTU != 0 && link.Attrs().MTU != conf.MTU {
		if err := netops.SetMTU(link, conf.MTU); err != nil {
			return err
		}
	}
	crashpoint.At(stepMTU)
	if err := netops.SetAddresses(link, conf.Addresses); err != nil {
		return err
	}
	crashpoint.At(stepAddresses)
	// Blackholes go in before the link comes up, so that no packet can
	// reach the metadata service in between.
	if conf.BlockInstanceMetadata {
		for _, dst := range instanceMetadata {
			if err := netops.AddBlackhole(dst); err != nil {
				return err
			}
		}
	}
	crashpoint.At(stepBlackholes)
	if err := netops.SetLinkUp(link); err != nil {
		return err
	}
	crashpoint.At(stepUp)
	// Routes last: the kernel takes a gateway only on a link that is up.
	for _, gw := range conf.Gateways {
		if err := netops.AddDefaultRoute(link, gw); err != nil {
			return err
		}
	}
	crashpoint.At(stepRoutes)
	return nil
}

// detach gives the ENI back to the host: out of the container (when ctr is
// not nil and holds it) flushed and down, under its recorded host name,
// then its host name, MTU and alias restored. It is DEL and the undo of a
// failed ADD, and it converges from any point an ADD or DEL stopped at.
func detach(mac net.HardwareAddr, host, ctr ns.NetNS, blockedIMDS bool) error {
	var errs []error
	if ctr != nil {
		if err := ctr.Do(func(ns.NetNS) error { return leaveContainer(mac, host, blockedIMDS) }); err != nil {
			errs = append(errs, err)
		}
	}
	crashpoint.At(stepReturned)
	if err := restoreHost(mac); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leaveContainer runs in the container: it removes what configure added and
// moves the ENI, if it is here, to the host.
func leaveContainer(mac net.HardwareAddr, host ns.NetNS, blockedIMDS bool) error {
	if blockedIMDS {
		for _, dst := range instanceMetadata {
			if err := netops.DeleteBlackhole(dst); err != nil {
				return err
			}
		}
	}
	link, err := findByMAC(mac)
	if err != nil || link == nil {
		return err
	}
	name := link.Attrs().Name
	if err := netops.FlushRoutes(link); err != nil {
		return err
	}
	if err := netops.FlushAddresses(link); err != nil {
		return err
	}
	if err := netops.SetLinkDown(link); err != nil {
		return err
	}
	crashpoint.At(stepReleased)
	hostName, err := freeHostName(host, link)
	if err != nil {
		return err
	}
	if _, err := netops.MoveLink(link, host, hostName); err != nil {
		return err
	}
	slog.Info("moved ENI back to the host", "mac", mac.String(), "from", name, "to", hostName)
	return nil
}

// freeHostName picks the name the ENI gets back in the host: its recorded
// one, unless another link took it meanwhile; else fallbackHostName.
func freeHostName(host ns.NetNS, link netlink.Link) (string, error) {
	mac := link.Attrs().HardwareAddr
	want := fallbackHostName(mac)
	if rec, ok := parseHostRecord(link.Attrs().Alias); ok {
		want = rec.Name
	}
	var name string
	err := host.Do(func(ns.NetNS) error {
		name = nameFreeFor(want, mac)
		return nil
	})
	return name, err
}

// nameFreeFor returns want unless a link with another MAC holds it in the
// current namespace; then fallbackHostName(mac).
func nameFreeFor(want string, mac net.HardwareAddr) string {
	if l, err := netops.LinkByName(want); err == nil && l.Attrs().HardwareAddr.String() != mac.String() {
		slog.Warn("host name of the ENI is taken, using another", "taken", want, "mac", mac.String())
		return fallbackHostName(mac)
	}
	return want
}

// restoreHost finishes the ENI's return in the host namespace, the current
// one: the recorded name (a move may have left a temporary one), MTU and
// alias. The alias goes last, so a crash before it leaves the record for
// the next DEL. An ENI with no record of ours is left alone.
func restoreHost(mac net.HardwareAddr) error {
	link, err := findByMAC(mac)
	if err != nil || link == nil {
		return err
	}
	rec, ok := parseHostRecord(link.Attrs().Alias)
	if !ok {
		return nil
	}
	if name := nameFreeFor(rec.Name, mac); link.Attrs().Name != name {
		if link, err = netops.RenameLink(link, name); err != nil {
			return err
		}
	}
	if rec.MTU != 0 && link.Attrs().MTU != rec.MTU {
		if err := netops.SetMTU(link, rec.MTU); err != nil {
			return fmt.Errorf("failed to restore the MTU: %w", err)
		}
	}
	if err := netops.SetAlias(link, rec.Alias); err != nil {
		return fmt.Errorf("failed to restore the alias: %w", err)
	}
	return nil
}

// observe reads the ENI in the container for CHECK.
func observe(ctr ns.NetNS, mac net.HardwareAddr) (eniState, error) {
	var got eniState
	err := ctr.Do(func(ns.NetNS) error {
		link, err := findByMAC(mac)
		if err != nil {
			return err
		}
		if link == nil {
			return errNoENI
		}
		attrs := link.Attrs()
		got = eniState{Name: attrs.Name, MAC: attrs.HardwareAddr.String(), Up: attrs.Flags&net.FlagUp != 0, MTU: attrs.MTU}
		if got.Addresses, err = netops.Addresses(link); err != nil {
			return err
		}
		routes, err := netops.Routes(link)
		if err != nil {
			return err
		}
		for _, r := range routes {
			got.Routes = append(got.Routes, route{Dst: r.Dst, GW: r.Via})
		}
		got.Blackholes, err = netops.Blackholes()
		return err
	})
	return got, err
}

// namespaceID names the current network namespace in messages, as
// "net:[inode]": the plugin does not know the name its runtime gave it.
func namespaceID() string {
	id, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return "the plugin's network namespace"
	}
	return id
}
