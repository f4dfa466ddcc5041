// Package pool is vpcnetd's warm-pool policy, as pure functions over values:
// no EC2 call, no clock, no file. The agent observes the node (its ENIs, their
// secondary addresses and /28 prefixes, which of them pods hold, which are in
// cooldown), calls Decide, carries out the one Action it returns against EC2,
// observes again, and repeats until Decide answers Nothing.
//
//   - Config is the agent's configuration, with aws-node's variable names and
//     meanings (WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET, ...);
//     LoadConfig decodes it from a JSON file and the environment.
//   - Limits is what the instance type allows (NewLimits), with max pods as
//     EKS computes it.
//   - Decide is the pool policy: grow, shrink, or nothing, with a reason.
//   - Pick chooses the address for a new pod.
//   - Exhausted explains why a pod cannot get an address now (the CNI
//     "try again" message).
//
// Where vpcnetd differs from aws-node (ipamd), on purpose:
//   - addresses in cooldown are not available: they do not satisfy
//     WARM_IP_TARGET or WARM_ENI_TARGET, so the pool grows instead of
//     stalling while pods wait (amazon-vpc-cni-k8s #2896);
//   - with prefix delegation, a subnet without a free /28
//     (InsufficientCidrBlocks) makes the pool fall back to single secondary
//     addresses instead of stopping;
//   - only ENIs vpcnetd created are ever deleted.
package pool
