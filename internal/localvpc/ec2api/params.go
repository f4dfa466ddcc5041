package ec2api

import (
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// params are a request's EC2 Query parameters. Lists are flattened as
// Name.1, Name.2 ... and structures as Name.1.Member, which is how both
// aws-sdk-go-v2 and botocore serialise the ec2 protocol.
type params url.Values

func (p params) str(name string) string { return url.Values(p).Get(name) }

func (p params) has(name string) bool {
	_, ok := p[name]
	return ok
}

func (p params) required(name string) (string, error) {
	v := p.str(name)
	if v == "" {
		return "", &vpc.Error{Code: vpc.CodeMissingParameter, Message: "The request must contain the parameter " + name}
	}
	return v, nil
}

func (p params) integer(name string) (int, error) {
	if !p.has(name) {
		return 0, nil
	}
	n, err := strconv.Atoi(p.str(name))
	if err != nil {
		return 0, invalidParam(name, p.str(name))
	}
	return n, nil
}

// count is an integer parameter that counts something: never negative.
func (p params) count(name string) (int, error) {
	n, err := p.integer(name)
	if err == nil && n < 0 {
		return 0, &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: "Value (" + p.str(name) + ") for parameter " + name + " is invalid. It must not be negative."}
	}
	return n, err
}

func (p params) boolean(name string) (*bool, error) {
	if !p.has(name) {
		return nil, nil
	}
	b, err := strconv.ParseBool(p.str(name))
	if err != nil {
		return nil, invalidParam(name, p.str(name))
	}
	return &b, nil
}

func invalidParam(name, value string) *vpc.Error {
	return &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: "Value (" + value + ") for parameter " + name + " is invalid."}
}

// members groups the parameters under prefix by their index: for "Filter",
// Filter.2.Name=x becomes members[1]["Name"]=x. A scalar list
// (SecurityGroupId.1=sg-a) yields members whose "" key holds the value.
// Members are returned in index order.
func (p params) members(prefix string) []params {
	byIndex := map[int]params{}
	for k, vs := range p {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		idx, tail, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(idx)
		if err != nil || n < 1 {
			continue
		}
		if byIndex[n] == nil {
			byIndex[n] = params{}
		}
		byIndex[n][tail] = vs
	}
	indexes := make([]int, 0, len(byIndex))
	for n := range byIndex {
		indexes = append(indexes, n)
	}
	sort.Ints(indexes)
	out := make([]params, len(indexes))
	for i, n := range indexes {
		out[i] = byIndex[n]
	}
	return out
}

// list returns a flattened scalar list: prefix.1, prefix.2 ...
func (p params) list(prefix string) []string {
	var out []string
	for _, m := range p.members(prefix) {
		if v := m.str(""); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// structList returns one member field of a list of structures:
// prefix.N.field for each N.
func (p params) structList(prefix, field string) []string {
	var out []string
	for _, m := range p.members(prefix) {
		if v := m.str(field); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (p params) filters() []vpc.Filter {
	var out []vpc.Filter
	for _, m := range p.members("Filter") {
		out = append(out, vpc.Filter{Name: m.str("Name"), Values: m.list("Value")})
	}
	return out
}

func (p params) describeInput(idsPrefix string) (vpc.DescribeInput, error) {
	max, err := p.integer("MaxResults")
	if err != nil {
		return vpc.DescribeInput{}, err
	}
	return vpc.DescribeInput{IDs: p.list(idsPrefix), Filters: p.filters(), MaxResults: max, NextToken: p.str("NextToken")}, nil
}

// tags reads Tag.N.Key / Tag.N.Value.
func tagsFrom(members []params) vpc.Tags {
	if len(members) == 0 {
		return nil
	}
	t := vpc.Tags{}
	for _, m := range members {
		t[m.str("Key")] = m.str("Value")
	}
	return t
}

// tagSpecifications returns the tags of TagSpecification.N for the
// resource type being created; another type is refused, as EC2 does.
func (p params) tagSpecifications(resourceType string) (vpc.Tags, error) {
	var out vpc.Tags
	for _, spec := range p.members("TagSpecification") {
		if rt := spec.str("ResourceType"); rt != resourceType {
			return nil, &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: "'" + rt + "' is not a valid taggable resource type for this operation."}
		}
		for k, v := range tagsFrom(spec.members("Tag")) {
			if out == nil {
				out = vpc.Tags{}
			}
			out[k] = v
		}
	}
	return out, nil
}

func parseAddrs(name string, vs []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(vs))
	for _, v := range vs {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, invalidParam(name, v)
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePrefixes(name string, vs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(vs))
	for _, v := range vs {
		pr, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, invalidParam(name, v)
		}
		out = append(out, pr)
	}
	return out, nil
}

// permissions reads IpPermissions.N (and the older top-level form of
// Authorize*: IpProtocol, FromPort, ToPort, CidrIp).
func (p params) permissions() ([]vpc.Permission, error) {
	ms := p.members("IpPermissions")
	if len(ms) == 0 && p.has("IpProtocol") {
		legacy := params{"IpProtocol": p["IpProtocol"]}
		for _, k := range []string{"FromPort", "ToPort"} {
			if p.has(k) {
				legacy[k] = p[k]
			}
		}
		if p.has("CidrIp") {
			legacy["IpRanges.1.CidrIp"] = p["CidrIp"]
		}
		ms = []params{legacy}
	}
	var out []vpc.Permission
	for _, m := range ms {
		from, err := m.integer("FromPort")
		if err != nil {
			return nil, err
		}
		to, err := m.integer("ToPort")
		if err != nil {
			return nil, err
		}
		perm := vpc.Permission{Protocol: m.str("IpProtocol"), FromPort: int32(from), ToPort: int32(to)}
		if !m.has("FromPort") {
			perm.FromPort = -1
		}
		if !m.has("ToPort") {
			perm.ToPort = -1
		}
		for _, r := range append(m.members("IpRanges"), m.members("Ipv6Ranges")...) {
			c := r.str("CidrIp") + r.str("CidrIpv6")
			pr, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, invalidParam("cidrIp", c)
			}
			perm.CIDRs = append(perm.CIDRs, vpc.PeerCIDR{CIDR: pr, Description: r.str("Description")})
		}
		for _, g := range m.members("Groups") {
			perm.Groups = append(perm.Groups, vpc.PeerGroup{GroupID: g.str("GroupId"), Description: g.str("Description")})
		}
		out = append(out, perm)
	}
	return out, nil
}
