// Command vpc-bridge is the CNI plugin that connects a container to a
// private host bridge to reach host endpoints such as the task metadata
// endpoint; see internal/plugins/vpcbridge.
package main

import (
	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/plugins/vpcbridge"
)

func main() {
	cni.Main("vpc-bridge", vpcbridge.Verbs)
}
