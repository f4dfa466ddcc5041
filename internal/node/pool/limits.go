package pool

import "fmt"

// AddressesPerPrefix is the size of a delegated IPv4 prefix (/28).
const AddressesPerPrefix = 16

// InstanceType is what DescribeInstanceTypes says about a type's networking,
// for the default network card (the only one vpcnetd uses).
type InstanceType struct {
	Name string
	// ENIs is NetworkInfo.MaximumNetworkInterfaces.
	ENIs int
	// IPv4PerENI is NetworkInfo.Ipv4AddressesPerInterface: the ENI's primary
	// address, its secondary addresses and its /28 prefixes each take one.
	IPv4PerENI int
	// PrefixDelegation: the type can hold /28 prefixes (Nitro types).
	PrefixDelegation bool
	// VCPUs is VCpuInfo.DefaultVCpus, for RecommendedMaxPods.
	VCPUs int
}

// Limits is what the pool may hold on this node.
type Limits struct {
	// TypeENIs is the instance type's ENI limit.
	TypeENIs int
	// ENIs is the number the pool may use: TypeENIs, or MAX_ENI if lower.
	// Every attached ENI counts, including ones vpcnetd does not manage.
	ENIs int
	// SlotsPerENI is how many secondary addresses or /28 prefixes one ENI
	// holds: Ipv4AddressesPerInterface less the ENI's primary address.
	SlotsPerENI int
	// Prefixes: prefix delegation is on (configured, and the type has it).
	Prefixes bool
	// MaxPods is the most pods the node's addresses can serve, as EKS
	// computes it (see NewLimits); the pool does not grow past this many
	// addresses. The agent may lower it to the kubelet's max-pods.
	MaxPods int
}

// NewLimits derives the pool's limits from the instance type and the
// configuration. It fails if prefix delegation is configured on a type that
// lacks it, or if the type's values make no sense.
//
// Max pods follows the EKS AMI's max-pods-calculator.sh (awslabs/amazon-eks-
// ami, files/max-pods-calculator.sh, with --show-max-allowed): the ENIs that
// carry pods (MAX_ENI if lower than the type's limit; one fewer under custom
// networking, where the primary ENI carries none), times the slots per ENI
// (addresses per ENI - 1), times 16 with prefix delegation, plus 2 for the
// host-network pods (aws-node and kube-proxy) that need no address. So
// m5.large (3 ENIs x 10 addresses) gets 3 x 9 + 2 = 29, t3.small 11,
// m5.xlarge 58, c5.4xlarge 234.
func NewLimits(t InstanceType, cfg Config) (Limits, error) {
	if t.ENIs < 1 || t.IPv4PerENI < 2 {
		return Limits{}, fmt.Errorf("instance type %s: %d ENIs with %d IPv4 addresses each leave no address for pods", t.Name, t.ENIs, t.IPv4PerENI)
	}
	if cfg.PrefixDelegation && !t.PrefixDelegation {
		return Limits{}, &ConfigError{Name: "ENABLE_PREFIX_DELEGATION",
			Problem: fmt.Sprintf("instance type %s cannot hold /28 prefixes (prefix delegation needs a Nitro type)", t.Name)}
	}
	l := Limits{TypeENIs: t.ENIs, ENIs: t.ENIs, SlotsPerENI: t.IPv4PerENI - 1, Prefixes: cfg.PrefixDelegation}
	if cfg.MaxENI >= 1 && cfg.MaxENI < t.ENIs {
		l.ENIs = cfg.MaxENI
	}
	podENIs := l.ENIs
	if cfg.CustomNetworking {
		podENIs--
	}
	perSlot := 1
	if l.Prefixes {
		perSlot = AddressesPerPrefix
	}
	l.MaxPods = podENIs*l.SlotsPerENI*perSlot + 2
	return l, nil
}

// RecommendedMaxPods is the kubelet max-pods the EKS AMI sets by default:
// the limit above, but no more than 110 on types with up to 30 vCPUs and 250
// above (the calculator's ceilings, which matter with prefix delegation).
func RecommendedMaxPods(t InstanceType, l Limits) int {
	if t.VCPUs > 30 {
		return min(l.MaxPods, 250)
	}
	return min(l.MaxPods, 110)
}
