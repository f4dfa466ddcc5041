package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// nsTag names what this package creates: namespaces vpct-e2e-<random> and
// local VPCs vte2e<random>.
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

// ENI is an elastic network interface the test created and attached to its
// local VPC instance: its device sits in the instance namespace, unconfigured,
// as a hot-attached ENI does on EC2.
type ENI struct {
	ID      string           // eni-...
	Name    string           // its device's name in the instance namespace
	MAC     net.HardwareAddr // how the plugins find it
	Address *net.IPNet       // the ENI's primary private address, with the subnet mask
	Gateway net.IP           // the subnet gateway (the VPC router)
	MTU     int
}

// Instance is an instance of a local VPC started for one test: the namespace
// where the runtimes and plugins run, one extra ENI attached to it, the task
// metadata endpoint served in the instance namespace, and the local VPC's
// real instance metadata service, which the ENI reaches unless blocked.
type Instance struct {
	NS  ns.NetNS // the instance: runtimes run here and the ENI lives here
	VPC *localvpctest.VPC
	ENI ENI
	// What the endpoints answer with at "/": a random nonce for the task
	// metadata endpoint, and IMDS's own listing (read from the instance).
	TaskMetadataBody, IMDSBody string
}

// Path is the instance namespace's path, for Command.NSPath.
func (i *Instance) Path() string { return i.NS.Path() }

// NewInstance starts a one-instance local VPC, creates an ENI in the
// instance's subnet with the AWS SDK, attaches it and waits for its device
// to appear in the instance, as the ECS agent does. Everything goes away
// with the local VPC when the test ends.
func NewInstance(t testing.TB) *Instance {
	t.Helper()
	v := localvpctest.Up(t, nsTag, "--instances", "1")
	in := v.Instances[0]
	instNS, err := ns.GetNS(netops.NamedNSPath(in.Namespace))
	if err != nil {
		t.Fatalf("open instance namespace: %v", err)
	}
	t.Cleanup(func() { instNS.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := v.EC2()
	sub, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{in.SubnetID}})
	if err != nil || len(sub.Subnets) != 1 {
		t.Fatalf("describe subnet %s: %v", in.SubnetID, err)
	}
	_, subnet, err := net.ParseCIDR(aws.ToString(sub.Subnets[0].CidrBlock))
	if err != nil {
		t.Fatal(err)
	}
	created, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(in.SubnetID), Description: aws.String("vpcnet e2e " + t.Name()),
	})
	if err != nil {
		t.Fatalf("create ENI: %v", err)
	}
	n := created.NetworkInterface
	mac, err := net.ParseMAC(aws.ToString(n.MacAddress))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: aws.String(in.ID), DeviceIndex: aws.Int32(1),
	}); err != nil {
		t.Fatalf("attach ENI: %v", err)
	}
	dev, err := netops.WaitForLink(ctx, instNS.Path(), mac)
	if err != nil {
		t.Fatalf("the attached ENI's device never appeared: %v", err)
	}
	gw := subnet.IP.To4()
	gw = net.IPv4(gw[0], gw[1], gw[2], gw[3]+1).To4()
	inst := &Instance{
		NS:  instNS,
		VPC: v,
		ENI: ENI{
			ID:      aws.ToString(n.NetworkInterfaceId),
			Name:    dev.Attrs().Name,
			MAC:     mac,
			Address: &net.IPNet{IP: net.ParseIP(aws.ToString(n.PrivateIpAddress)).To4(), Mask: subnet.Mask},
			Gateway: gw,
			MTU:     dev.Attrs().MTU,
		},
		TaskMetadataBody: "task metadata " + testenv.RandomHex(8),
	}
	inst.IMDSBody = v.MustOnInstance(1, "curl", "-sf", "-m", "5", IMDSURL)
	if inst.IMDSBody == "" {
		t.Fatal("instance metadata answered the instance with an empty body")
	}
	// The task metadata endpoint lives on the instance, as the ECS agent's
	// does; the task bridge routes to it.
	if err := instNS.Do(func(ns.NetNS) error { return addAddr("lo", TaskMetadataIP+"/32") }); err != nil {
		t.Fatalf("add %s to the instance: %v", TaskMetadataIP, err)
	}
	serveText(t, inst.NS, TaskMetadataIP+":80", inst.TaskMetadataBody)
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
