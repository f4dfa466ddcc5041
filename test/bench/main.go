// Command bench measures vpcnet side by side with the reference CNI plugins
// (Debian's containernetworking-plugins) and prints markdown tables: CNI
// ADD/DEL latency through cnitool, IPAM cost as allocations grow, the local
// VPC's API and datapath, task start-up broken down by step, and pods on
// vpcnetd (pods: podburst, podcold, podfresh, podwarm1, podrate, podrss,
// podfleet). It runs as root and creates only namespaces named vpcb-* and
// local VPCs named vpcb*, removed when it ends.
//
//	go run ./test/bench [-n 40] [-sections cni,ipam,localvpc,task,pods,kubernetes]
//
// The binaries come from VPCNET_BIN_DIR (make bench sets it to bin/).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/netops"
)

var (
	iterations = flag.Int("n", 40, "iterations per measurement")
	sections   = flag.String("sections", "cni,ipam,localvpc,task,pods,kubernetes", "comma-separated sections to run (pods is every pod* section)")
	binDir     = flag.String("bin", os.Getenv("VPCNET_BIN_DIR"), "directory of the vpcnet binaries")
	refDir     = flag.String("ref", "/usr/lib/cni", "directory of the reference CNI plugins")
)

// Every namespace the benchmark creates starts with nsPrefix, and every
// local VPC it starts with localVPCPrefix, so a crashed run is cleaned up by
// the next.
const (
	nsPrefix       = "vpcb-"
	localVPCPrefix = "vpcb"
)

func main() {
	flag.Parse()
	if *binDir == "" {
		fatalf("set VPCNET_BIN_DIR or -bin to the directory of the built binaries (make bench does)")
	}
	abs, err := filepath.Abs(*binDir)
	if err != nil {
		fatalf("%v", err)
	}
	*binDir = abs
	cleanLeftovers()
	defer cleanLeftovers()
	fmt.Printf("# vpcnet benchmarks\n\n%s, %d CPUs, %s, n=%d per row\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), kernel(), *iterations)
	run := map[string]func(){
		"cni":        benchCNI,
		"ipam":       benchIPAM,
		"localvpc":   benchLocalVPC,
		"task":       benchTask,
		"pods":       benchPods,
		"kubernetes": benchKubernetes,
	}
	for _, s := range podSections {
		run[s.name] = func() { runPodSection(s.name, s.run) }
	}
	for _, s := range strings.Split(*sections, ",") {
		f, ok := run[strings.TrimSpace(s)]
		if !ok {
			fatalf("unknown section %q", s)
		}
		f()
	}
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "linux"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	cleanLeftovers()
	os.Exit(1)
}

func cleanLeftovers() {
	cleanLocalVPCs(localVPCPrefix)
	names, _ := netops.ListNamedNS(nsPrefix)
	for _, n := range names {
		_ = netops.DeleteNamedNS(n)
	}
}

// sample is a set of measured durations.
type sample []time.Duration

func (s sample) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := append(sample(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	idx := int(q * float64(len(c)-1))
	return c[idx]
}

func (s sample) median() time.Duration { return s.quantile(0.5) }
func (s sample) p95() time.Duration    { return s.quantile(0.95) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// table prints a markdown table.
func table(header []string, rows [][]string) {
	fmt.Println("| " + strings.Join(header, " | ") + " |")
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Println("| " + strings.Join(seps, " | ") + " |")
	for _, r := range rows {
		fmt.Println("| " + strings.Join(r, " | ") + " |")
	}
	fmt.Println()
}
