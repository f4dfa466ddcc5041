package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// nsTag names the namespaces this package creates: vpct-e2e-<random>.
const nsTag = "e2e"

// The well-known addresses of an ECS task's network.
const (
	TaskMetadataIP = "169.254.170.2"   // task metadata and credentials endpoint
	IMDSIP         = "169.254.169.254" // instance metadata service
	// TaskBridgeSubnet is where the task bridge's addresses come from. A
	// /29 (ECS uses a /22) leaves 5 addresses after the gateway: a test
	// that starts more containers than that one after the other proves
	// that each one's address was released.
	TaskBridgeSubnet   = "169.254.172.0/29"
	TaskBridgeCapacity = 5
)

// ENI is the interface that plays an elastic network interface: a veth end
// in the instance namespace with a chosen MAC, whose peer is in the VPC
// namespace holding the subnet gateway.
type ENI struct {
	ID      string           // eni-...; only carried in configs
	Name    string           // its name in the instance namespace
	MAC     net.HardwareAddr // how the plugins find it
	Address *net.IPNet       // the ENI's primary private address, with the subnet mask
	Gateway net.IP           // the subnet gateway (the VPC router)
	MTU     int
}

// Instance is a fake EC2 instance for one test: the namespace where the
// runtimes and plugins run, one ENI, the task metadata endpoint served in
// the instance namespace and an instance metadata service reachable
// through the ENI, so that a missing blackhole route shows.
type Instance struct {
	NS  ns.NetNS // the instance: runtimes run here and the ENI lives here
	VPC ns.NetNS // the VPC router, on the other end of the ENI
	ENI ENI
	// The bodies the endpoints answer with; each holds a random nonce.
	TaskMetadataBody, IMDSBody string
}

// Path is the instance namespace's path, for Command.NSPath.
func (i *Instance) Path() string { return i.NS.Path() }

// NewInstance builds an instance in fresh namespaces (deleted when the test
// ends, with everything in them).
func NewInstance(t testing.TB) *Instance {
	t.Helper()
	testenv.Privileged(t)
	mac, _ := net.ParseMAC("02:e2:e2:" + testenv.RandomHex(1) + ":" + testenv.RandomHex(1) + ":" + testenv.RandomHex(1))
	_, subnet, _ := net.ParseCIDR("10.200.0.0/24")
	inst := &Instance{
		NS:  testenv.NewNS(t, nsTag),
		VPC: testenv.NewNS(t, nsTag),
		ENI: ENI{
			ID:      "eni-e2e" + testenv.RandomHex(5),
			Name:    "eth1",
			MAC:     mac,
			Address: &net.IPNet{IP: net.IPv4(10, 200, 0, 10).To4(), Mask: subnet.Mask},
			Gateway: net.IPv4(10, 200, 0, 1).To4(),
			MTU:     1500,
		},
		TaskMetadataBody: "task metadata " + testenv.RandomHex(8),
		IMDSBody:         "instance metadata " + testenv.RandomHex(8),
	}
	vpcFd := int(inst.VPC.Fd())
	err := inst.NS.Do(func(ns.NetNS) error {
		if err := linkUp("lo"); err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: inst.ENI.Name, HardwareAddr: mac, MTU: inst.ENI.MTU},
			PeerName:      "vpc0",
			PeerNamespace: netlink.NsFd(vpcFd),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create the ENI veth: %w", err)
		}
		return addAddr("lo", TaskMetadataIP+"/32")
	})
	if err != nil {
		t.Fatalf("set up instance namespace: %v", err)
	}
	err = inst.VPC.Do(func(ns.NetNS) error {
		if err := linkUp("lo"); err != nil {
			return err
		}
		gw := &net.IPNet{IP: inst.ENI.Gateway, Mask: subnet.Mask}
		if err := addAddr("vpc0", gw.String()); err != nil {
			return err
		}
		if err := linkUp("vpc0"); err != nil {
			return err
		}
		return addAddr("lo", IMDSIP+"/32")
	})
	if err != nil {
		t.Fatalf("set up VPC namespace: %v", err)
	}
	serveText(t, inst.NS, TaskMetadataIP+":80", inst.TaskMetadataBody)
	serveText(t, inst.VPC, IMDSIP+":80", inst.IMDSBody)
	return inst
}

// TaskMetadataURL and IMDSURL are what a container fetches.
const (
	TaskMetadataURL = "http://" + TaskMetadataIP + "/"
	IMDSURL         = "http://" + IMDSIP + "/"
)

// ENIHome reports whether the ENI is back in the instance namespace, as
// after a DEL: present (found by MAC) and holding no IPv4 address.
func (i *Instance) ENIHome() error {
	return i.NS.Do(func(ns.NetNS) error {
		l, err := netops.LinkByMAC(i.ENI.MAC)
		if err != nil {
			return fmt.Errorf("ENI %s is not in the instance namespace: %w", i.ENI.MAC, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) > 0 {
			return fmt.Errorf("ENI %s (%s) is back but still has addresses %v", i.ENI.MAC, l.Attrs().Name, addrs)
		}
		return nil
	})
}

// Links returns the instance namespace's links as name -> type, to compare
// before and after a container's life.
func (i *Instance) Links(t testing.TB) map[string]string {
	t.Helper()
	links := map[string]string{}
	err := i.NS.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			links[l.Attrs().Name] = l.Type()
		}
		return err
	})
	if err != nil {
		t.Fatalf("list instance links: %v", err)
	}
	return links
}

// LeakedLinks compares the instance's links now with before: it returns the
// links that are new, other than bridges (a task bridge stays for the next
// task, as ECS's does), and the ones that are gone.
func (i *Instance) LeakedLinks(t testing.TB, before map[string]string) (added, removed []string) {
	t.Helper()
	now := i.Links(t)
	for name, typ := range now {
		if _, ok := before[name]; !ok && typ != "bridge" {
			added = append(added, name+" ("+typ+")")
		}
	}
	for name := range before {
		if _, ok := now[name]; !ok {
			removed = append(removed, name)
		}
	}
	return added, removed
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func addAddr(link, cidr string) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find %s: %w", link, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", cidr, link, err)
	}
	return nil
}

// serveText answers every HTTP request on addr, in namespace n, with body.
// The listening socket belongs to n for its whole life.
func serveText(t testing.TB, n ns.NetNS, addr, body string) {
	t.Helper()
	var ln net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.Path(), err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server on %s: %v", addr, err)
		}
	})
}
