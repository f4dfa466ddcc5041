// Command vpc-ipam is the CNI IPAM plugin that hands out addresses from a
// persistent store; see internal/plugins/vpcipam.
package main

import (
	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/plugins/vpcipam"
)

func main() { cni.Main("vpc-ipam", vpcipam.Verbs) }
