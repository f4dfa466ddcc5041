// Package nodeapi is the contract between the vpc-pod CNI plugin and the
// vpcnetd node agent: the gRPC service in nodeapi.proto (generated code in
// nodeapi.pb.go and nodeapi_grpc.pb.go; `make proto` regenerates it) and the
// few names both sides must derive the same way.
package nodeapi

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative nodeapi.proto

import (
	"crypto/sha256"
	"encoding/hex"
)

// DefaultSocket is where vpcnetd serves the API, inside the node's (or the
// local VPC instance's) mount namespace.
const DefaultSocket = "/run/vpcnet/vpcnetd.sock"

// HealthService is the service name vpcnetd reports in grpc.health.v1.
const HealthService = "vpcnetd"

// RuleProtocol marks every ip rule of the pod datapath (FRA_PROTOCOL), the
// plugin's per-pod rules and the agent's off-VPC rules alike: the kernel
// keeps the mark, so each side finds its own rules and no one else's.
// Numbers above 99 are free for routing daemons; 118 is "v".
const RuleProtocol uint8 = 118

// DefaultVethPrefix starts the host side name of every pod veth.
const DefaultVethPrefix = "vpc"

// HostVethName is the host side name of the attachment's veth: the prefix
// (at most 4 characters) and a hash of the attachment, 15 characters in all.
// It is stable across retries, so a retried ADD finds its veth, and the agent
// can tell from the host alone whether an attachment still has one.
func HostVethName(prefix string, a *Attachment) string {
	if prefix == "" {
		prefix = DefaultVethPrefix
	}
	if len(prefix) > 4 {
		prefix = prefix[:4]
	}
	sum := sha256.Sum256([]byte(a.GetNetwork() + "\x00" + a.GetContainerId() + "\x00" + a.GetIfName()))
	return prefix + hex.EncodeToString(sum[:])[:15-len(prefix)]
}
