package e2e

import (
	"testing"
	"time"
)

// A benchCase is one way of networking a task, with vpcnet's plugins or
// the reference ones: the conflists (one network each) it attaches.
type benchCase struct {
	name    string
	vpcnet  bool
	network func(p Plugins, inst *Instance) [][]map[string]any
}

var benchCases = []benchCase{
	{"reference-bridge", false, bridgeOnly},
	{"vpc-bridge", true, bridgeOnly},
	{"reference-host-device", false, eniOnly},
	{"vpc-eni", true, eniOnly},
	{"reference-eni+bridge", false, eniAndBridge},
	{"vpcnet-eni+bridge", true, eniAndBridge},
}

func bridgeOnly(p Plugins, _ *Instance) [][]map[string]any {
	return [][]map[string]any{{p.Bridge(TaskBridgeSubnet, "")}}
}

func eniOnly(p Plugins, inst *Instance) [][]map[string]any {
	return [][]map[string]any{{p.ENI(inst.ENI)}}
}

func eniAndBridge(p Plugins, inst *Instance) [][]map[string]any {
	return [][]map[string]any{{p.ENI(inst.ENI)}, {p.Bridge(TaskBridgeSubnet, "")}}
}

func (c benchCase) plugins(b *testing.B, run *RunDir) Plugins {
	if c.vpcnet {
		return VPCNetPlugins(b, run)
	}
	return ReferencePlugins(b, run)
}

// BenchmarkPodmanRunRm times `podman run --rm <busybox> true` in the
// instance, one task after the other. ENI and bridge go in as two networks
// (eth0, ecs-eth0). Reported: the median of the runs.
//
//	go test ./test/e2e -run '^$' -bench PodmanRunRm -benchtime 20x
func BenchmarkPodmanRunRm(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			run := NewRunDir(b)
			inst := NewInstance(b)
			plugins := bc.plugins(b, run)
			confDir := run.File("net.d")
			var nets []Attachment
			for i, conf := range bc.network(plugins, inst) {
				name := run.Network([]string{"a", "b"}[i])
				WriteConflist(b, confDir, name, conf...)
				nets = append(nets, Attachment{name, []string{"eth0", TaskIfName}[i]})
			}
			p := NewPodman(b, run, PodmanConfig{NSPath: inst.Path(), PluginDir: plugins.Dir, ConfDir: confDir})
			var took []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := p.Run(PodmanRun{Networks: nets, Remove: true, Cmd: []string{"true"}}).Run()
				if r.Err != nil {
					b.Fatalf("podman run --rm: %v\n%s", r.Err, r.Output())
				}
				took = append(took, r.Elapsed)
			}
			b.ReportMetric(float64(median(took))/1e6, "median-ms")
		})
	}
}

// BenchmarkCRIRunp times `crictl runp` (sandbox and CNI ADD) against
// containerd in the instance, and separately stopp + rmp (the DELs).
// ENI and bridge together are one chained conflist, as the CRI takes one.
//
//	go test ./test/e2e -run '^$' -bench CRIRunp -benchtime 20x
func BenchmarkCRIRunp(b *testing.B) {
	for _, bc := range benchCases {
		if bc.name == "reference-eni+bridge" {
			continue // the reference bridge cannot follow host-device in a chain
		}
		b.Run(bc.name, func(b *testing.B) {
			run := NewRunDir(b)
			inst := NewInstance(b)
			plugins := bc.plugins(b, run)
			var chain []map[string]any
			for _, conf := range bc.network(plugins, inst) {
				chain = append(chain, conf...)
			}
			if len(chain) > 1 {
				chain[1] = plugins.Bridge(TaskBridgeSubnet, TaskIfName)
			}
			confDir := WriteConflist(b, run.File("net.d"), run.Network("task"), chain...)
			c := StartContainerd(b, run, ContainerdConfig{NSPath: inst.Path(), PluginDir: plugins.Dir, ConfDir: confDir})
			podConfig := c.PodConfig(b, "bench")
			var runp, teardown []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pod, r := c.RunPod(b, podConfig)
				if r.Err != nil {
					b.Fatalf("crictl runp: %v\n%s", r.Err, r.Output())
				}
				runp = append(runp, r.Elapsed)
				b.StopTimer()
				stop := c.Crictl("stopp", pod).Run()
				rm := c.Crictl("rmp", pod).Run()
				if stop.Err != nil || rm.Err != nil {
					b.Fatalf("crictl stopp, rmp: %v %v\n%s\n%s", stop.Err, rm.Err, stop.Output(), rm.Output())
				}
				teardown = append(teardown, stop.Elapsed+rm.Elapsed)
				b.StartTimer()
			}
			b.ReportMetric(float64(median(runp))/1e6, "median-runp-ms")
			b.ReportMetric(float64(median(teardown))/1e6, "median-stopp+rmp-ms")
		})
	}
}
