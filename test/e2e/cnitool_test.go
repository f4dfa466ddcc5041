package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestCNITool drives the ENI network and the task bridge network through
// libcni's cnitool, as the ECS agent drives them: ADD, CHECK and DEL of
// each into one container namespace, and DEL again. (Debian's reference
// plugins fail it: bridge 1.1.1's CHECK expects a route without its
// gateway, and host-device's DEL is not idempotent.)
func TestCNITool(t *testing.T) {
	run := NewRunDir(t)
	plugins := VPCNetPlugins(t, run)
	inst := NewInstance(t)
	plugins = plugins.Recording(t, run)
	diagnoseOnFailure(t, run)
	container := testenv.NewNS(t, nsTag)
	confDir := run.File("net.d")
	eniNet, bridgeNet := run.Network("eni"), run.Network("taskbridge")
	WriteConflist(t, confDir, eniNet, plugins.ENI(inst.ENI))
	WriteConflist(t, confDir, bridgeNet, plugins.Bridge(TaskBridgeSubnet, ""))
	cni := CNITool{NSPath: inst.Path(), PluginDir: plugins.Dir, ConfDir: confDir, Env: pluginLogEnv(run)}
	before := inst.Links(t)

	res, r := cni.Add(t, eniNet, container.Path(), "eth0")
	if r.Err != nil {
		t.Fatalf("ADD %s: %v\n%s", eniNet, r.Err, r.Output())
	}
	assertInterface(t, res, "eth0", inst.ENI.MAC.String(), container.Path())
	assertAddress(t, res, inst.ENI.Address.String())
	if err := inst.ENIHome(); err == nil {
		t.Errorf("the ENI is still in the instance namespace after ADD")
	}
	if r := cni.Check(t, eniNet, container.Path(), "eth0"); r.Err != nil {
		t.Errorf("CHECK %s: %v\n%s", eniNet, r.Err, r.Output())
	}

	res, r = cni.Add(t, bridgeNet, container.Path(), TaskIfName)
	if r.Err != nil {
		t.Fatalf("ADD %s: %v\n%s", bridgeNet, r.Err, r.Output())
	}
	_, subnet, _ := net.ParseCIDR(TaskBridgeSubnet)
	var bridgeIP net.IP
	for _, ip := range res.IPs {
		if subnet.Contains(ip.Address.IP) {
			bridgeIP = ip.Address.IP
		}
	}
	if bridgeIP == nil {
		t.Errorf("ADD %s: no address in %s in the result: %s", bridgeNet, TaskBridgeSubnet, r.Stdout)
	}
	if r := cni.Check(t, bridgeNet, container.Path(), TaskIfName); r.Err != nil {
		t.Errorf("CHECK %s: %v\n%s", bridgeNet, r.Err, r.Output())
	}

	// What the container sees, through the kernel rather than the results.
	err := container.Do(func(ns.NetNS) error {
		l, err := netops.LinkByMAC(inst.ENI.MAC)
		if err != nil {
			t.Errorf("ENI not in the container: %v", err)
		} else if l.Attrs().Name != "eth0" {
			t.Errorf("ENI is called %s in the container, want eth0", l.Attrs().Name)
		}
		if _, err := netlink.LinkByName(TaskIfName); err != nil {
			t.Errorf("no %s in the container: %v", TaskIfName, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	Command{NSPath: container.Path(), Name: testenv.Tool(t, "ping"), Args: []string{"-c", "1", "-W", "5", inst.ENI.Gateway.String()}}.MustRun(t)
	if body, err := fetchIn(container, TaskMetadataURL); err != nil || strings.TrimSpace(body) != inst.TaskMetadataBody {
		t.Errorf("GET %s from the container = %q, %v; want %q", TaskMetadataURL, body, err, inst.TaskMetadataBody)
	}
	body, err := fetchIn(container, IMDSURL)
	reached := err == nil && strings.TrimSpace(body) == inst.IMDSBody
	if reached == plugins.BlocksIMDS {
		t.Errorf("GET %s from the container: %q, %v; want blocked=%v", IMDSURL, body, err, plugins.BlocksIMDS)
	}

	// DEL in the reverse order, each twice: DEL is idempotent.
	for i := 0; i < 2; i++ {
		if r := cni.Del(t, bridgeNet, container.Path(), TaskIfName); r.Err != nil {
			t.Errorf("DEL %s (#%d): %v\n%s", bridgeNet, i+1, r.Err, r.Output())
		}
		if r := cni.Del(t, eniNet, container.Path(), "eth0"); r.Err != nil {
			t.Errorf("DEL %s (#%d): %v\n%s", eniNet, i+1, r.Err, r.Output())
		}
	}
	assertTaskGone(t, inst, before)
	err = container.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("%s (%s) left in the container after DEL", l.Attrs().Name, l.Type())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func assertInterface(t *testing.T, res *current.Result, name, mac, sandbox string) {
	t.Helper()
	for _, i := range res.Interfaces {
		if i.Name == name && i.Sandbox != "" {
			if i.Mac != mac || i.Sandbox != sandbox {
				t.Errorf("result interface %s: mac %s sandbox %s, want %s and %s", name, i.Mac, i.Sandbox, mac, sandbox)
			}
			return
		}
	}
	t.Errorf("result has no interface %s in a sandbox: %+v", name, res.Interfaces)
}

func assertAddress(t *testing.T, res *current.Result, cidr string) {
	t.Helper()
	for _, ip := range res.IPs {
		if ip.Address.String() == cidr {
			return
		}
	}
	t.Errorf("result has no address %s: %v", cidr, res.IPs)
}

// fetchIn GETs url from inside namespace n (the socket is made there).
func fetchIn(n ns.NetNS, url string) (string, error) {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
				nsErr := n.Do(func(ns.NetNS) error {
					conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return nil
				})
				if nsErr != nil {
					return nil, nsErr
				}
				return conn, err
			},
		},
	}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
