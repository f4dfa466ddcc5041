// Command vpc-pod is the CNI plugin that gives a Kubernetes pod an address
// of one of its node's ENIs, handed out by vpcnetd, routed over a veth; see
// internal/plugins/vpcpod.
package main

import (
	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/plugins/vpcpod"
)

func main() {
	cni.Main("vpc-pod", vpcpod.Verbs)
}
