package vpceni

import "testing"

// BenchmarkAddDel attaches a dual-stack ENI with blocked metadata and
// detaches it again: in-process (the plugin's own work) and as the binary
// (what a runtime pays, process start included).
func BenchmarkAddDel(b *testing.B) {
	for _, r := range []runner{inProcess{}, newBinary(b)} {
		b.Run(r.name(), func(b *testing.B) {
			w := newWorld(b, 1)
			e := w.enis[0]
			add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(b))
			del := add.as("DEL")
			for b.Loop() {
				mustSucceed(b, r.run(b, w, add), "ADD")
				mustSucceed(b, r.run(b, w, del), "DEL")
			}
		})
	}
}
