package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// cniCase is one row of the CNI table: a network config and the plugin
// directories it needs, plus optional per-host set-up.
type cniCase struct {
	name    string
	plugins []any
	path    []string
	// prepare runs once in the host namespace before the iterations.
	prepare func(host ns.NetNS) error
}

func benchCNI() {
	fmt.Println("## CNI ADD and DEL through cnitool (ms)")
	fmt.Println()
	fmt.Println("Each iteration: a new container namespace, `cnitool add`, `cnitool del`, run in a host namespace of the benchmark's own. The no-op plugin is the floor: process start, config decoding, result printing.")
	fmt.Println()
	ensureCNITool()
	bridgeIPAM := func(ipamType string, extra map[string]any) map[string]any {
		ipam := map[string]any{
			"type":   ipamType,
			"ranges": [][]map[string]string{{{"subnet": "169.254.172.0/22", "gateway": "169.254.172.1"}}},
			"routes": []map[string]string{{"dst": "169.254.170.2/32"}},
		}
		for k, v := range extra {
			ipam[k] = v
		}
		return ipam
	}
	state := mustTempDir("vpcnet-bench-")
	defer os.RemoveAll(state)
	eniMAC, _ := net.ParseMAC("02:00:00:00:be:01")
	cases := []cniCase{
		{name: "no-op plugin (floor)", plugins: []any{map[string]any{"type": "cninoop"}}, path: []string{*binDir}},
		{name: "reference bridge + host-local", path: []string{*refDir}, plugins: []any{map[string]any{
			"type": "bridge", "bridge": "refbr0", "isGateway": true,
			"ipam": bridgeIPAM("host-local", map[string]any{"dataDir": filepath.Join(state, "host-local")}),
		}}},
		{name: "vpc-bridge + vpc-ipam", path: []string{*binDir}, plugins: []any{map[string]any{
			"type": "vpc-bridge", "bridge": "vpcbr0",
			"ipam": bridgeIPAM("vpc-ipam", map[string]any{"store": filepath.Join(state, "vpc-ipam.db")}),
		}}},
		{name: "vpc-eni", path: []string{*binDir}, plugins: []any{map[string]any{
			"type": "vpc-eni", "mac": eniMAC.String(),
			"ipAddresses": []string{"10.0.0.10/24"}, "gatewayIPAddresses": []string{"10.0.0.1"},
			"blockInstanceMetadata": true,
		}}, prepare: func(host ns.NetNS) error {
			return host.Do(func(ns.NetNS) error {
				return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1", HardwareAddr: eniMAC}, PeerName: "eth1peer"})
			})
		}},
	}
	var rows [][]string
	for _, c := range cases {
		add, del, err := runCNICase(c)
		if err != nil {
			rows = append(rows, []string{c.name, "error: " + err.Error(), "", "", "", ""})
			continue
		}
		var both sample
		for i := range add {
			both = append(both, add[i]+del[i])
		}
		rows = append(rows, []string{c.name, ms(add.median()), ms(add.p95()), ms(del.median()), ms(del.p95()), ms(both.median())})
	}
	table([]string{"plugin", "ADD median", "ADD p95", "DEL median", "DEL p95", "ADD+DEL median"}, rows)

	move, err := kernelMove()
	if err != nil {
		fmt.Printf("kernel floor: error: %v\n\n", err)
		return
	}
	fmt.Printf("The kernel's own part of vpc-eni's work: moving a link into a namespace and back (two netlink requests, no process start) takes %s ms median, %s ms p95 here. An ENI plugin cannot be faster than that plus the floor.\n\n", ms(move.median()), ms(move.p95()))
}

// kernelMove times moving a veth end into another namespace and back.
func kernelMove() (sample, error) {
	a, err := netops.CreateNamedNS(nsPrefix + "mvA")
	if err != nil {
		return nil, err
	}
	defer func() { a.Close(); _ = netops.DeleteNamedNS(nsPrefix + "mvA") }()
	b, err := netops.CreateNamedNS(nsPrefix + "mvB")
	if err != nil {
		return nil, err
	}
	defer func() { b.Close(); _ = netops.DeleteNamedNS(nsPrefix + "mvB") }()
	var s sample
	err = a.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mv0"}, PeerName: "mv0p"}); err != nil {
			return err
		}
		for i := 0; i < *iterations; i++ {
			l, err := netlink.LinkByName("mv0")
			if err != nil {
				return err
			}
			start := time.Now()
			if err := netlink.LinkSetNsFd(l, int(b.Fd())); err != nil {
				return err
			}
			err = b.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("mv0")
				if err != nil {
					return err
				}
				return netlink.LinkSetNsFd(l, int(a.Fd()))
			})
			if err != nil {
				return err
			}
			s = append(s, time.Since(start))
		}
		return nil
	})
	return s, err
}

func ensureCNITool() {
	if _, err := exec.LookPath("cnitool"); err != nil {
		fatalf("cnitool is not installed (make deps installs it)")
	}
}

func mustTempDir(prefix string) string {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		fatalf("%v", err)
	}
	return d
}

func runCNICase(c cniCase) (add, del sample, err error) {
	host, err := netops.CreateNamedNS(nsPrefix + "host")
	if err != nil {
		return nil, nil, err
	}
	defer func() { host.Close(); _ = netops.DeleteNamedNS(nsPrefix + "host") }()
	if c.prepare != nil {
		if err := c.prepare(host); err != nil {
			return nil, nil, fmt.Errorf("prepare: %w", err)
		}
	}
	confDir := mustTempDir("vpcnet-bench-conf-")
	defer os.RemoveAll(confDir)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "benchnet", "plugins": c.plugins})
	if err := os.WriteFile(filepath.Join(confDir, "10-bench.conflist"), conf, 0o644); err != nil {
		return nil, nil, err
	}
	env := append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+joinPath(c.path))
	for i := 0; i < *iterations; i++ {
		name := fmt.Sprintf("%sctr%d", nsPrefix, i)
		ctr, err := netops.CreateNamedNS(name)
		if err != nil {
			return nil, nil, err
		}
		ctr.Close()
		d, err := cnitool(host, env, "add", netops.NamedNSPath(name))
		if err != nil {
			_ = netops.DeleteNamedNS(name)
			return nil, nil, err
		}
		add = append(add, d)
		d, err = cnitool(host, env, "del", netops.NamedNSPath(name))
		_ = netops.DeleteNamedNS(name)
		if err != nil {
			return nil, nil, err
		}
		del = append(del, d)
	}
	return add, del, nil
}

// cnitool runs cnitool inside the host namespace and times it. The child is
// forked from a thread in that namespace, so it starts there.
func cnitool(host ns.NetNS, env []string, verb, netns string) (time.Duration, error) {
	var d time.Duration
	var out []byte
	err := host.Do(func(ns.NetNS) error {
		cmd := exec.Command("cnitool", verb, "benchnet", netns)
		cmd.Env = env
		start := time.Now()
		var err error
		out, err = cmd.CombinedOutput()
		d = time.Since(start)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cnitool %s: %v: %s", verb, err, out)
	}
	return d, nil
}

func joinPath(dirs []string) string {
	s := ""
	for i, d := range dirs {
		if i > 0 {
			s += ":"
		}
		s += d
	}
	return s
}
