package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// benchIPAM compares vpc-ipam with the reference host-local as the number
// of existing allocations grows: each measurement execs the IPAM plugin
// directly (ADD, then DEL of the same attachment), as a main plugin does.
func benchIPAM() {
	fmt.Println("## IPAM: vpc-ipam and host-local as allocations grow (ms per operation)")
	fmt.Println()
	fmt.Println("The plugin binary exec'd directly with the CNI environment, ADD then DEL of one attachment, in a network that already holds N allocations (made beforehand, not timed). host-local keeps one file per address and scans them all to release; vpc-ipam keeps a bbolt index by attachment and by address.")
	fmt.Println()
	ctr, err := netops.CreateNamedNS(nsPrefix + "ipam")
	if err != nil {
		fatalf("%v", err)
	}
	ctr.Close()
	defer netops.DeleteNamedNS(nsPrefix + "ipam")
	netnsPath := netops.NamedNSPath(nsPrefix + "ipam")

	var rows [][]string
	for _, n := range []int{10, 1000, 10000} {
		for _, plugin := range []string{"vpc-ipam", "host-local"} {
			dir := mustTempDir("vpcnet-bench-ipam-")
			conf, err := prepareIPAM(plugin, dir, n)
			if err != nil {
				rows = append(rows, []string{fmt.Sprint(n), plugin, "error: " + err.Error(), "", "", "", ""})
				os.RemoveAll(dir)
				continue
			}
			add, del, err := runIPAM(plugin, conf, netnsPath)
			os.RemoveAll(dir)
			if err != nil {
				rows = append(rows, []string{fmt.Sprint(n), plugin, "error: " + err.Error(), "", "", "", ""})
				continue
			}
			rows = append(rows, []string{fmt.Sprint(n), plugin, ms(add.median()), ms(add.p95()), ms(del.median()), ms(del.p95())})
		}
	}
	table([]string{"existing allocations", "plugin", "ADD median", "ADD p95", "DEL median", "DEL p95"}, rows)
}

var benchRange = netip.MustParsePrefix("10.128.0.0/16")

// prepareIPAM writes n allocations the way the plugin stores them and
// returns the network config.
func prepareIPAM(plugin, dir string, n int) ([]byte, error) {
	ipamConf := map[string]any{"type": plugin, "ranges": [][]map[string]string{{{"subnet": benchRange.String()}}}}
	switch plugin {
	case "vpc-ipam":
		path := filepath.Join(dir, "ipam.db")
		ipamConf["store"] = path
		if err := populateVPCIPAM(path, n); err != nil {
			return nil, err
		}
	case "host-local":
		ipamConf["dataDir"] = dir
		if err := populateHostLocal(filepath.Join(dir, "benchnet"), n); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "ipam": ipamConf})
}

func populateVPCIPAM(path string, n int) error {
	r, err := ipam.NewRange(benchRange, netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		return err
	}
	s, err := ipam.Open(path, 10*time.Second)
	if err != nil {
		return err
	}
	defer s.Close()
	pool := ipam.Pool{Network: "benchnet", Sets: []ipam.RangeSet{{r}}}
	for i := 0; i < n; i++ {
		if _, err := s.Allocate(pool, ipam.Owner{ContainerID: fmt.Sprintf("pre%06d", i), IfName: "eth0"}, nil); err != nil {
			return err
		}
	}
	return nil
}

// populateHostLocal writes host-local's on-disk layout: one file per
// address holding the container ID and interface name.
func populateHostLocal(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	a := benchRange.Addr().Next().Next() // .1 is the gateway
	var last netip.Addr
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, a.String()), []byte(fmt.Sprintf("pre%06d\r\neth0", i)), 0o644); err != nil {
			return err
		}
		last, a = a, a.Next()
	}
	return os.WriteFile(filepath.Join(dir, "last_reserved_ip.0"), []byte(last.String()), 0o644)
}

func runIPAM(plugin string, conf []byte, netnsPath string) (add, del sample, err error) {
	dir := *binDir
	if plugin == "host-local" {
		dir = *refDir
	}
	bin := filepath.Join(dir, plugin)
	for i := 0; i < *iterations; i++ {
		id := fmt.Sprintf("bench%06d", i)
		d, err := execPlugin(bin, "ADD", id, netnsPath, conf)
		if err != nil {
			return nil, nil, err
		}
		add = append(add, d)
		if d, err = execPlugin(bin, "DEL", id, netnsPath, conf); err != nil {
			return nil, nil, err
		}
		del = append(del, d)
	}
	return add, del, nil
}

func execPlugin(bin, verb, containerID, netnsPath string, conf []byte) (time.Duration, error) {
	cmd := exec.Command(bin)
	cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(bin), "PATH=/usr/bin:/bin"}
	cmd.Stdin = bytes.NewReader(conf)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), verb, err, out)
	}
	return d, nil
}
