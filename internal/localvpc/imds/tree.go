package imds

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// versions are the metadata API versions a path may start with. Every one
// serves the current tree: clients pin a version so that categories added
// later cannot surprise them, and none of ours is newer than what they ask.
var versions = []string{
	"1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
	"2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01",
	"2012-01-12", "2014-02-25", "2014-11-05", "2015-10-20", "2016-04-01",
	"2016-06-30", "2016-09-02", "2018-03-28", "2018-08-17", "2018-09-24",
	"2019-10-01", "2020-10-27", "2021-01-03", "2021-03-23", "2021-07-15",
	"2022-09-24", "latest",
}

// node is one path of the metadata tree: a value, or a category whose body
// lists its entries, one a line, sub-categories ending in '/'.
type node struct {
	value    string
	children map[string]*node
	// bareListing lists sub-categories without the trailing '/', as the
	// version level (meta-data, dynamic) is listed.
	bareListing bool
}

func newCategory() *node { return &node{children: map[string]*node{}} }

// text is the body served for the node.
func (n *node) text() string {
	if n.children == nil {
		return n.value
	}
	names := make([]string, 0, len(n.children))
	for name, c := range n.children {
		if c.children != nil && !n.bareListing {
			name += "/"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, "\n")
}

// put places child at the slash-separated path below n, creating the
// categories on the way.
func (n *node) put(path string, child *node) {
	parts := strings.Split(path, "/")
	cur := n
	for _, p := range parts[:len(parts)-1] {
		next, ok := cur.children[p]
		if !ok {
			next = newCategory()
			cur.children[p] = next
		}
		cur = next
	}
	cur.children[parts[len(parts)-1]] = child
}

// addValue adds a value, unless it is empty: EC2 leaves out what an instance
// does not have rather than serving it empty.
func (n *node) addValue(path, v string) {
	if v != "" {
		n.put(path, &node{value: v})
	}
}

// addList adds a multi-line value, one item a line, unless there are none.
func (n *node) addList(path string, items []string) {
	n.addValue(path, strings.Join(items, "\n"))
}

// resolve returns the node a request path names for inst, or nil. A
// trailing slash is optional on both values and categories, as on EC2
// (botocore asks for placement/availability-zone/, other clients for
// network/interfaces/macs without one).
func resolve(inst Instance, urlPath string) *node {
	segs := strings.FieldsFunc(urlPath, func(r rune) bool { return r == '/' })
	if len(segs) == 0 {
		return &node{value: strings.Join(versions, "\n")}
	}
	if !knownVersion(segs[0]) {
		return nil
	}
	cur := versionTree(inst)
	for _, s := range segs[1:] {
		if cur.children == nil {
			return nil
		}
		if cur = cur.children[s]; cur == nil {
			return nil
		}
	}
	return cur
}

func knownVersion(v string) bool {
	for _, known := range versions {
		if v == known {
			return true
		}
	}
	return false
}

// versionTree is everything under /latest/ for inst. There is no user-data
// category: local instances are launched without user data, and EC2 then
// answers 404 for it.
func versionTree(inst Instance) *node {
	root := newCategory()
	root.bareListing = true
	root.put("meta-data", metaData(inst))
	root.put("dynamic/instance-identity/document", &node{value: identityDocument(inst)})
	return root
}

func metaData(inst Instance) *node {
	md := newCategory()
	primary, hasPrimary := primaryInterface(inst.Interfaces)
	hostname := inst.Hostname
	if hostname == "" && hasPrimary && len(primary.LocalIPv4s) > 0 {
		hostname = privateDNSName(primary.LocalIPv4s[0], inst.Region)
	}

	md.addValue("ami-id", inst.AMIID)
	md.addValue("hostname", hostname)
	md.addValue("instance-id", inst.ID)
	md.addValue("instance-type", inst.Type)
	md.addValue("local-hostname", hostname)
	md.addValue("placement/availability-zone", inst.AvailabilityZone)
	md.addValue("placement/availability-zone-id", inst.AvailabilityZoneID)
	md.addValue("placement/region", inst.Region)
	if hasPrimary {
		if len(primary.LocalIPv4s) > 0 {
			md.addValue("local-ipv4", primary.LocalIPv4s[0])
		}
		md.addValue("mac", primary.MAC)
		md.addList("security-groups", primary.SecurityGroupNames)
	}
	for _, eni := range inst.Interfaces {
		if eni.MAC != "" {
			md.put("network/interfaces/macs/"+eni.MAC, interfaceTree(eni, inst))
		}
	}
	if inst.RoleName != "" {
		md.addValue("iam/info", iamInfo(inst))
		md.addValue("iam/security-credentials/"+inst.RoleName, roleCredentials(inst.Credentials))
	}
	return md
}

func interfaceTree(eni Interface, inst Instance) *node {
	n := newCategory()
	n.addValue("device-number", strconv.Itoa(eni.DeviceNumber))
	n.addValue("network-card", strconv.Itoa(eni.NetworkCard))
	n.addValue("interface-id", eni.InterfaceID)
	n.addValue("mac", eni.MAC)
	n.addValue("owner-id", inst.AccountID)
	n.addList("local-ipv4s", eni.LocalIPv4s)
	if len(eni.LocalIPv4s) > 0 {
		n.addValue("local-hostname", privateDNSName(eni.LocalIPv4s[0], inst.Region))
	}
	n.addList("ipv4-prefix", eni.IPv4Prefixes)
	n.addList("ipv6s", eni.IPv6s)
	n.addList("ipv6-prefix", eni.IPv6Prefixes)
	n.addValue("subnet-id", eni.SubnetID)
	n.addValue("subnet-ipv4-cidr-block", eni.SubnetIPv4CIDR)
	n.addList("subnet-ipv6-cidr-blocks", eni.SubnetIPv6CIDRs)
	n.addValue("vpc-id", eni.VPCID)
	if len(eni.VPCIPv4CIDRs) > 0 {
		n.addValue("vpc-ipv4-cidr-block", eni.VPCIPv4CIDRs[0])
	}
	n.addList("vpc-ipv4-cidr-blocks", eni.VPCIPv4CIDRs)
	n.addList("vpc-ipv6-cidr-blocks", eni.VPCIPv6CIDRs)
	n.addList("security-group-ids", eni.SecurityGroupIDs)
	n.addList("security-groups", eni.SecurityGroupNames)
	return n
}

// primaryInterface is the ENI at device 0 of network card 0, the one an
// instance is launched with.
func primaryInterface(enis []Interface) (Interface, bool) {
	for _, e := range enis {
		if e.DeviceNumber == 0 && e.NetworkCard == 0 {
			return e, true
		}
	}
	return Interface{}, false
}

// privateDNSName is EC2's IP-based private name of an address:
// ip-10-0-1-5.ec2.internal in us-east-1, ip-10-0-1-5.REGION.compute.internal
// elsewhere.
func privateDNSName(ipv4, region string) string {
	a, err := netip.ParseAddr(ipv4)
	if err != nil || !a.Is4() {
		return ""
	}
	host := "ip-" + strings.ReplaceAll(a.String(), ".", "-")
	if region == "us-east-1" || region == "" {
		return host + ".ec2.internal"
	}
	return host + "." + region + ".compute.internal"
}

// partition is the AWS partition a region belongs to, for ARNs.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	default:
		return "aws"
	}
}

// imdsTime is how the metadata service writes times in its JSON
// documents: UTC, whole seconds (botocore parses exactly this form).
func imdsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func identityDocument(inst Instance) string {
	arch := inst.Architecture
	if arch == "" {
		arch = "x86_64"
	}
	var privateIP any
	if p, ok := primaryInterface(inst.Interfaces); ok && len(p.LocalIPv4s) > 0 {
		privateIP = p.LocalIPv4s[0]
	}
	return documentJSON([]field{
		{"accountId", inst.AccountID},
		{"architecture", arch},
		{"availabilityZone", inst.AvailabilityZone},
		{"billingProducts", nil},
		{"devpayProductCodes", nil},
		{"marketplaceProductCodes", nil},
		{"imageId", inst.AMIID},
		{"instanceId", inst.ID},
		{"instanceType", inst.Type},
		{"kernelId", nil},
		{"pendingTime", imdsTime(inst.LaunchTime)},
		{"privateIp", privateIP},
		{"ramdiskId", nil},
		{"region", inst.Region},
		{"version", "2017-09-30"},
	})
}

func iamInfo(inst Instance) string {
	return documentJSON([]field{
		{"Code", "Success"},
		{"LastUpdated", imdsTime(inst.Credentials.LastUpdated)},
		{"InstanceProfileArn", "arn:" + partition(inst.Region) + ":iam::" + inst.AccountID + ":instance-profile/" + inst.RoleName},
		{"InstanceProfileId", inst.InstanceProfileID},
	})
}

func roleCredentials(c Credentials) string {
	return documentJSON([]field{
		{"Code", "Success"},
		{"LastUpdated", imdsTime(c.LastUpdated)},
		{"Type", "AWS-HMAC"},
		{"AccessKeyId", c.AccessKeyID},
		{"SecretAccessKey", c.SecretAccessKey},
		{"Token", c.Token},
		{"Expiration", imdsTime(c.Expiration)},
	})
}

type field struct {
	key   string
	value any // a string, or nil for null
}

// documentJSON writes an object in the metadata service's layout: keys in
// a fixed order, one a line, "key" : value.
func documentJSON(fields []field) string {
	var b strings.Builder
	b.WriteString("{\n")
	for i, f := range fields {
		k, _ := json.Marshal(f.key)
		v, _ := json.Marshal(f.value)
		b.WriteString("  ")
		b.Write(k)
		b.WriteString(" : ")
		b.Write(v)
		if i < len(fields)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}")
	return b.String()
}
