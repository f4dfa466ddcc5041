// Command vpcnet-pause is the sandbox process of pods on a local VPC's
// nodes and in the e2e tests (the image localhost/vpcnet-pause): it holds
// the pod's namespaces, reaps the children it inherits as PID 1, and exits
// on SIGTERM or SIGINT. Static and tiny, it stands in for
// registry.k8s.io/pause, which cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/vpcnet/vpcnet/internal/version"
)

func main() {
	version.HandleFlag()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
