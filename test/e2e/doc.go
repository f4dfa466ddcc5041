// Package e2e runs vpcnet's CNI plugins under the real container runtimes
// of a Debian 12 node: cnitool (libcni), podman 4.3 with its CNI backend,
// and containerd 1.6's CRI driven by crictl. Nothing global is configured:
// every runtime gets generated config files, state and sockets in a run
// directory, and runs inside an "instance" network namespace, where the
// plugins it execs find the ENI.
//
// The harness, for these tests and for the local VPC's:
//
//   - Command runs a program in a network namespace (only the network
//     namespace changes; mounts stay the host's) and Start runs a daemon
//     that dies with the test binary.
//   - RunDir is a test's directory; its cleanup, and CleanLeftovers from
//     TestMain for runs that crashed, kill what runs from it or in its
//     cgroup, remove its runtimes' namespaces, CNI cache entries, mounts
//     and cgroups.
//   - Instance is a fake instance: a namespace with a veth end that plays
//     the ENI (its peer, in a VPC namespace, holds the gateway and an
//     instance metadata service), and the task metadata endpoint
//     169.254.170.2 served in the instance. On the local VPC, use its
//     instance namespace and ENI instead.
//   - Plugins are vpcnet's or the reference plugins in the two awsvpc
//     roles (ENI, task bridge) with their configs; Conflist and
//     WriteConflist write network configs; Recording records each call.
//   - CNITool, Podman (NewPodman) and Containerd (StartContainerd) drive
//     the runtimes; images (busybox, and a pause binary from ./pause) are
//     built offline as a rootfs tarball and OCI-layout archives.
//
// The tests need root and the runtimes (scripts/install-runtimes.sh).
package e2e
