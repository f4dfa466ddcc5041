package vpc

import (
	"maps"
	"slices"
)

// InstanceType is what DescribeInstanceTypes tells about a type's
// networking, the limits the model enforces on attachments and addresses.
type InstanceType struct {
	Name  string
	VCPUs int32
	// MemoryMiB is the memory size, for DescribeInstanceTypes.
	MemoryMiB int64
	// MaxNetworkInterfaces is the ENI limit across all network cards; the
	// types here have one card.
	MaxNetworkInterfaces int32
	// IPv4PerInterface counts the primary address, secondary addresses
	// and, on Nitro, each delegated /28 prefix as one slot.
	IPv4PerInterface   int32
	IPv6PerInterface   int32
	NetworkPerformance string
	// Nitro types support prefix delegation.
	Nitro bool
}

// instanceTypes holds real EC2 limits (as published in EC2's
// DescribeInstanceTypes and in amazon-vpc-cni-k8s's generated limits).
var instanceTypes = map[string]InstanceType{
	"t3.micro":    {VCPUs: 2, MemoryMiB: 1024, MaxNetworkInterfaces: 2, IPv4PerInterface: 2, IPv6PerInterface: 2, NetworkPerformance: "Up to 5 Gigabit", Nitro: true},
	"t3.small":    {VCPUs: 2, MemoryMiB: 2048, MaxNetworkInterfaces: 3, IPv4PerInterface: 4, IPv6PerInterface: 4, NetworkPerformance: "Up to 5 Gigabit", Nitro: true},
	"t3.medium":   {VCPUs: 2, MemoryMiB: 4096, MaxNetworkInterfaces: 3, IPv4PerInterface: 6, IPv6PerInterface: 6, NetworkPerformance: "Up to 5 Gigabit", Nitro: true},
	"t3.large":    {VCPUs: 2, MemoryMiB: 8192, MaxNetworkInterfaces: 3, IPv4PerInterface: 12, IPv6PerInterface: 12, NetworkPerformance: "Up to 5 Gigabit", Nitro: true},
	"m5.large":    {VCPUs: 2, MemoryMiB: 8192, MaxNetworkInterfaces: 3, IPv4PerInterface: 10, IPv6PerInterface: 10, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"m5.xlarge":   {VCPUs: 4, MemoryMiB: 16384, MaxNetworkInterfaces: 4, IPv4PerInterface: 15, IPv6PerInterface: 15, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"m5.2xlarge":  {VCPUs: 8, MemoryMiB: 32768, MaxNetworkInterfaces: 4, IPv4PerInterface: 15, IPv6PerInterface: 15, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"m5.4xlarge":  {VCPUs: 16, MemoryMiB: 65536, MaxNetworkInterfaces: 8, IPv4PerInterface: 30, IPv6PerInterface: 30, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"m5.24xlarge": {VCPUs: 96, MemoryMiB: 393216, MaxNetworkInterfaces: 15, IPv4PerInterface: 50, IPv6PerInterface: 50, NetworkPerformance: "25 Gigabit", Nitro: true},
	"c5.large":    {VCPUs: 2, MemoryMiB: 4096, MaxNetworkInterfaces: 3, IPv4PerInterface: 10, IPv6PerInterface: 10, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"c5.xlarge":   {VCPUs: 4, MemoryMiB: 8192, MaxNetworkInterfaces: 4, IPv4PerInterface: 15, IPv6PerInterface: 15, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
	"c5.4xlarge":  {VCPUs: 16, MemoryMiB: 32768, MaxNetworkInterfaces: 8, IPv4PerInterface: 30, IPv6PerInterface: 30, NetworkPerformance: "Up to 10 Gigabit", Nitro: true},
}

// maxAddressesPerInterface bounds an unattached interface: EC2 checks the
// instance type's limit only once it is attached.
const maxAddressesPerInterface = 50

// LookupInstanceType returns the limits of a type, or InvalidParameterValue
// for a type the local VPC does not know.
func LookupInstanceType(name string) (InstanceType, error) {
	t, ok := instanceTypes[name]
	if !ok {
		return InstanceType{}, invalidValue("Invalid value '%s' for InstanceType.", name)
	}
	t.Name = name
	return t, nil
}

// InstanceTypeNames lists the known types, sorted.
func InstanceTypeNames() []string { return slices.Sorted(maps.Keys(instanceTypes)) }

// DescribeInstanceTypes returns the named types (all when names is empty),
// or InvalidInstanceType naming the unknown ones, as EC2 does.
func DescribeInstanceTypes(names []string) ([]InstanceType, error) {
	if len(names) == 0 {
		names = InstanceTypeNames()
	}
	var out []InstanceType
	var unknown []string
	for _, n := range names {
		t, err := LookupInstanceType(n)
		if err != nil {
			unknown = append(unknown, n)
			continue
		}
		out = append(out, t)
	}
	if len(unknown) > 0 {
		return nil, errorf(CodeInvalidInstanceType, "The following supplied instance types do not exist: %v", unknown)
	}
	return out, nil
}
