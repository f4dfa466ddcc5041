package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// The task metadata endpoint, as on ECS: every task reaches it through its
// metadata bridge, and nothing else is reachable through that bridge.
var (
	EndpointAddr   = netip.MustParseAddr("169.254.170.2")
	bridgeSubnet   = netip.MustParsePrefix("169.254.172.0/22")
	bridgeGateway  = netip.MustParseAddr("169.254.172.1")
	eniIfName      = "eth0"
	bridgeIfName   = "meta0"
	bridgeName     = "vpcnet-meta"
	eniNetwork     = "vpcnet-task-eni"
	bridgeNetwork  = "vpcnet-task-meta"
	taskCNIVersion = "1.0.0"
)

// Networks runs the two CNI networks of a task through libcni: the task's
// ENI (vpc-eni) as eth0, and the metadata bridge (vpc-bridge + vpc-ipam).
type Networks struct {
	CNIPath  []string // directories holding vpc-eni, vpc-bridge, vpc-ipam
	CacheDir string   // libcni's result cache, one per instance
	IPAMDir  string   // holds vpc-ipam's store, one per instance
}

func (n Networks) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(n.CNIPath, n.CacheDir, nil)
}

func runtimeConf(r *Record, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: r.ID,
		NetNS:       r.Netns,
		IfName:      ifName,
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"VPCNET_TASK_ID", r.ID}},
	}
}

// eniList is the vpc-eni network of the task: its ENI, found by MAC, with
// the VPC addresses, the subnet gateway and instance metadata blocked.
func (n Networks) eniList(r *Record) (*libcni.NetworkConfigList, error) {
	bits := r.SubnetCIDR.Bits()
	var addrs, gws []string
	for _, a := range r.Addresses {
		addrs = append(addrs, netip.PrefixFrom(a, bits).String())
	}
	if r.Gateway.IsValid() {
		gws = append(gws, r.Gateway.String())
	}
	for _, a := range r.IPv6 {
		addrs = append(addrs, netip.PrefixFrom(a, r.SubnetIPv6.Bits()).String())
	}
	plugin := map[string]any{
		"type":                  "vpc-eni",
		"eniID":                 r.ENIID,
		"mac":                   r.MAC,
		"ipAddresses":           addrs,
		"gatewayIPAddresses":    gws,
		"blockInstanceMetadata": true,
	}
	return confList(eniNetwork, plugin)
}

// bridgeList is the metadata-bridge network: one route, to the endpoint.
func (n Networks) bridgeList() (*libcni.NetworkConfigList, error) {
	plugin := map[string]any{
		"type":   "vpc-bridge",
		"bridge": bridgeName,
		"ipam": map[string]any{
			"type":  "vpc-ipam",
			"store": filepath.Join(n.IPAMDir, "ipam.db"),
			"ranges": [][]map[string]string{{{
				"subnet":  bridgeSubnet.String(),
				"gateway": bridgeGateway.String(),
			}}},
			"routes": []map[string]string{{"dst": netip.PrefixFrom(EndpointAddr, 32).String()}},
		},
	}
	return confList(bridgeNetwork, plugin)
}

func confList(name string, plugin map[string]any) (*libcni.NetworkConfigList, error) {
	data, err := json.Marshal(map[string]any{
		"cniVersion": taskCNIVersion,
		"name":       name,
		"plugins":    []any{plugin},
	})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(data)
}

// AddENI runs ADD of the ENI network and returns the addresses configured.
func (n Networks) AddENI(ctx context.Context, r *Record) (*current.Result, error) {
	list, err := n.eniList(r)
	if err != nil {
		return nil, err
	}
	res, err := n.cni().AddNetworkList(ctx, list, runtimeConf(r, eniIfName))
	if err != nil {
		return nil, fmt.Errorf("vpc-eni ADD: %w", err)
	}
	return current.NewResultFromResult(res)
}

// AddBridge runs ADD of the metadata-bridge network and returns the task's
// address on it and the bridge port (host veth) it is on.
func (n Networks) AddBridge(ctx context.Context, r *Record) (netip.Addr, string, error) {
	list, err := n.bridgeList()
	if err != nil {
		return netip.Addr{}, "", err
	}
	res, err := n.cni().AddNetworkList(ctx, list, runtimeConf(r, bridgeIfName))
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("vpc-bridge ADD: %w", err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, "", err
	}
	return bridgeResult(cur)
}

// bridgeResult picks the task's IPv4 address and the host veth (the one
// interface outside any sandbox that is not the bridge) from vpc-bridge's
// result.
func bridgeResult(cur *current.Result) (netip.Addr, string, error) {
	port := ""
	for _, intf := range cur.Interfaces {
		if intf.Sandbox == "" && intf.Name != bridgeName {
			port = intf.Name
		}
	}
	if port == "" {
		return netip.Addr{}, "", errors.New("vpc-bridge ADD returned no host veth")
	}
	for _, ip := range cur.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP.To4()); ok {
			return a, port, nil
		}
	}
	return netip.Addr{}, "", errors.New("vpc-bridge ADD returned no IPv4 address")
}

// Del runs DEL of both networks, bridge first (the reverse of ADD). DEL is
// idempotent in every vpcnet plugin, so this is safe to repeat after a
// crash at any point. A namespace that is already gone is passed as "".
func (n Networks) Del(ctx context.Context, r *Record) error {
	rr := *r
	if rr.Netns != "" {
		if _, err := os.Stat(rr.Netns); err != nil {
			rr.Netns = ""
		}
	}
	var errs []error
	if list, err := n.bridgeList(); err == nil {
		if err := n.cni().DelNetworkList(ctx, list, runtimeConf(&rr, bridgeIfName)); err != nil {
			errs = append(errs, fmt.Errorf("vpc-bridge DEL: %w", err))
		}
	}
	if rr.MAC != "" {
		list, err := n.eniList(&rr)
		if err == nil {
			err = n.cni().DelNetworkList(ctx, list, runtimeConf(&rr, eniIfName))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("vpc-eni DEL: %w", err))
		}
	}
	return errors.Join(errs...)
}
