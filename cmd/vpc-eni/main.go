// Command vpc-eni is the CNI plugin that moves a whole ENI into a
// container's network namespace; see internal/plugins/vpceni.
package main

import (
	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/plugins/vpceni"
)

func main() {
	cni.Main("vpc-eni", vpceni.Verbs)
}
