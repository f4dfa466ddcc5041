package vpc

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultGroupName is the name of the group every VPC is created with.
const DefaultGroupName = "default"

var (
	anyIPv4 = netip.MustParsePrefix("0.0.0.0/0")
	anyIPv6 = netip.MustParsePrefix("::/0")
)

// createDefaultGroup adds a VPC's "default" group: ingress from members of
// the group itself, egress to everywhere (IPv4 and, the VPC having an IPv6
// block, IPv6), as EC2 creates it.
func createDefaultGroup(st *State, vpcID string) *SecurityGroup {
	g := &SecurityGroup{
		ID: st.newID("sg"), Name: DefaultGroupName, Description: "default VPC security group", VPCID: vpcID,
	}
	g.Ingress = []Rule{{ID: st.newID("sgr"), Protocol: "-1", FromPort: -1, ToPort: -1, GroupID: g.ID}}
	g.Egress = defaultEgress(st)
	st.SecurityGroups[g.ID] = g
	return g
}

func defaultEgress(st *State) []Rule {
	return []Rule{
		{ID: st.newID("sgr"), Protocol: "-1", FromPort: -1, ToPort: -1, CIDR: anyIPv4},
		{ID: st.newID("sgr"), Protocol: "-1", FromPort: -1, ToPort: -1, CIDR: anyIPv6},
	}
}

// defaultGroupOf returns the ID of a VPC's default group.
func defaultGroupOf(st *State, vpcID string) string {
	for _, g := range SortedValues(st.SecurityGroups) {
		if g.VPCID == vpcID && g.Name == DefaultGroupName {
			return g.ID
		}
	}
	return ""
}

// CreateSecurityGroupInput is CreateSecurityGroup's request.
type CreateSecurityGroupInput struct {
	Name        string
	Description string
	VPCID       string // the first VPC (the "default VPC") when empty
	Tags        Tags
}

// CreateSecurityGroup creates a group that allows all egress and no
// ingress.
func (m *Model) CreateSecurityGroup(in CreateSecurityGroupInput) (SecurityGroup, error) {
	if in.Name == "" {
		return SecurityGroup{}, errorf(CodeMissingParameter, "The request must contain the parameter groupName")
	}
	if in.Description == "" {
		return SecurityGroup{}, errorf(CodeMissingParameter, "The request must contain the parameter groupDescription")
	}
	if strings.HasPrefix(in.Name, "sg-") {
		return SecurityGroup{}, invalidValue("Group names may not be in the format sg-*.")
	}
	if in.Name == DefaultGroupName {
		return SecurityGroup{}, errorf(CodeInvalidGroupReserved, "The security group '%s' is reserved", in.Name)
	}
	if err := checkDescription("GroupName", in.Name); err != nil {
		return SecurityGroup{}, err
	}
	if err := checkDescription("GroupDescription", in.Description); err != nil {
		return SecurityGroup{}, err
	}
	var out SecurityGroup
	err := m.update(func(st *State) error {
		vpcID := in.VPCID
		if vpcID == "" {
			if vpcs := SortedValues(st.VPCs); len(vpcs) > 0 {
				vpcID = vpcs[0].ID
			}
		}
		if _, ok := st.VPCs[vpcID]; !ok {
			return vpcNotFound(vpcID)
		}
		for _, g := range st.SecurityGroups {
			if g.VPCID == vpcID && g.Name == in.Name {
				return errorf(CodeInvalidGroupDuplicate, "The security group '%s' already exists for VPC '%s'", in.Name, vpcID)
			}
		}
		g := &SecurityGroup{ID: st.newID("sg"), Name: in.Name, Description: in.Description, VPCID: vpcID, Tags: cloneTags(in.Tags)}
		g.Egress = defaultEgress(st)
		st.SecurityGroups[g.ID] = g
		out = *g.clone()
		return nil
	})
	return out, err
}

// DeleteSecurityGroup deletes a group, named by ID or, in the first VPC,
// by name. As on EC2, a VPC's default group cannot be deleted, nor a group
// that an interface is in or another group's rule refers to
// (DependencyViolation). It returns the deleted group's ID.
func (m *Model) DeleteSecurityGroup(id, name string) (string, error) {
	if id == "" && name == "" {
		return "", errorf(CodeMissingParameter, "The request must contain the parameter groupId or groupName")
	}
	var deleted string
	err := m.update(func(st *State) error {
		g, err := findGroup(st, id, name)
		if err != nil {
			return err
		}
		if g.Name == DefaultGroupName {
			return errorf(CodeCannotDelete, "the specified group: \"%s\" name: \"%s\" cannot be deleted by a user", g.ID, g.Name)
		}
		for _, n := range SortedValues(st.NetworkInterfaces) {
			if slices.Contains(n.Groups, g.ID) {
				return errorf(CodeDependencyViolation, "resource %s has a dependent object (network interface %s)", g.ID, n.ID)
			}
		}
		for _, other := range SortedValues(st.SecurityGroups) {
			if other.ID == g.ID {
				continue
			}
			for _, r := range slices.Concat(other.Ingress, other.Egress) {
				if r.GroupID == g.ID {
					return errorf(CodeDependencyViolation, "resource %s has a dependent object (a rule of security group %s)", g.ID, other.ID)
				}
			}
		}
		delete(st.SecurityGroups, g.ID)
		deleted = g.ID
		return nil
	})
	return deleted, err
}

// findGroup finds a group by ID, or else by name in the first VPC, as EC2
// finds a group name in the default VPC.
func findGroup(st *State, id, name string) (*SecurityGroup, error) {
	if id != "" {
		g, ok := st.SecurityGroups[id]
		if !ok {
			return nil, groupNotFound(id)
		}
		return g, nil
	}
	var defaultVPC string
	if vpcs := SortedValues(st.VPCs); len(vpcs) > 0 {
		defaultVPC = vpcs[0].ID
	}
	for _, g := range SortedValues(st.SecurityGroups) {
		if g.VPCID == defaultVPC && g.Name == name {
			return g, nil
		}
	}
	return nil, errorf(CodeInvalidGroupNotFound, "The security group '%s' does not exist in default VPC '%s'", name, defaultVPC)
}

// Permission is EC2's IpPermission: rules sharing protocol and ports, with
// their peers.
type Permission struct {
	Protocol string
	FromPort int32
	ToPort   int32
	CIDRs    []PeerCIDR
	Groups   []PeerGroup
}

// PeerCIDR is an IPv4 or IPv6 range of a permission.
type PeerCIDR struct {
	CIDR        netip.Prefix
	Description string
}

// PeerGroup is a security group referenced by a permission.
type PeerGroup struct {
	GroupID     string
	Description string
}

// Rules flattens permissions into one rule per peer, normalising the
// protocol and ports, with no IDs yet.
func Rules(perms []Permission) ([]Rule, error) {
	var out []Rule
	for _, p := range perms {
		proto, from, to, err := normalisePorts(p.Protocol, p.FromPort, p.ToPort)
		if err != nil {
			return nil, err
		}
		if len(p.CIDRs)+len(p.Groups) == 0 {
			return nil, errorf(CodeMissingParameter, "Either a CIDR block or a source security group must be specified")
		}
		for _, c := range p.CIDRs {
			if !c.CIDR.IsValid() || c.CIDR != c.CIDR.Masked() {
				return nil, invalidValue("CIDR block %s is malformed", c.CIDR)
			}
			out = append(out, Rule{Protocol: proto, FromPort: from, ToPort: to, CIDR: c.CIDR, Description: c.Description})
		}
		for _, g := range p.Groups {
			out = append(out, Rule{Protocol: proto, FromPort: from, ToPort: to, GroupID: g.GroupID, Description: g.Description})
		}
	}
	return out, nil
}

// Permissions groups rules back into EC2's IpPermissions, in the order of
// their first rule.
func Permissions(rules []Rule) []Permission {
	var out []Permission
	for _, r := range rules {
		i := slices.IndexFunc(out, func(p Permission) bool {
			return p.Protocol == r.Protocol && p.FromPort == r.FromPort && p.ToPort == r.ToPort
		})
		if i < 0 {
			out = append(out, Permission{Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort})
			i = len(out) - 1
		}
		if r.GroupID != "" {
			out[i].Groups = append(out[i].Groups, PeerGroup{GroupID: r.GroupID, Description: r.Description})
		} else {
			out[i].CIDRs = append(out[i].CIDRs, PeerCIDR{CIDR: r.CIDR, Description: r.Description})
		}
	}
	return out
}

// normalisePorts maps protocol names and numbers to EC2's canonical form
// and checks the ports: none for all protocols, 0-65535 for TCP and UDP,
// type and code (-1 for any) for ICMP.
func normalisePorts(proto string, from, to int32) (string, int32, int32, error) {
	switch p := strings.ToLower(proto); p {
	case "-1", "all":
		return "-1", -1, -1, nil
	case "tcp", "6", "udp", "17":
		name := map[string]string{"6": "tcp", "17": "udp"}[p]
		if name == "" {
			name = p
		}
		if from < 0 || to > 65535 || from > to {
			return "", 0, 0, invalidValue("Invalid port range %d-%d for protocol %s", from, to, name)
		}
		return name, from, to, nil
	case "icmp", "1", "icmpv6", "58":
		name := map[string]string{"1": "icmp", "58": "icmpv6"}[p]
		if name == "" {
			name = p
		}
		if from < -1 || from > 255 || to < -1 || to > 255 {
			return "", 0, 0, invalidValue("Invalid ICMP type %d or code %d", from, to)
		}
		return name, from, to, nil
	default:
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 {
			return "", 0, 0, invalidValue("Invalid value '%s' for IP protocol. Unknown protocol.", proto)
		}
		return p, -1, -1, nil
	}
}

// AuthorizeSecurityGroupRules adds ingress (or egress) rules to a group and
// returns them with their IDs. Referenced groups must exist in the same
// VPC; a rule that exists already is InvalidPermission.Duplicate.
func (m *Model) AuthorizeSecurityGroupRules(groupID string, egress bool, perms []Permission) ([]Rule, error) {
	rules, err := Rules(perms)
	if err != nil {
		return nil, err
	}
	var out []Rule
	err = m.update(func(st *State) error {
		g, ok := st.SecurityGroups[groupID]
		if !ok {
			return groupNotFound(groupID)
		}
		list := &g.Ingress
		if egress {
			list = &g.Egress
		}
		for _, r := range rules {
			if err := checkPeerGroup(st, g, r); err != nil {
				return err
			}
			if slices.ContainsFunc(*list, func(x Rule) bool { return sameRule(x, r) }) {
				return errorf(CodeInvalidPermissionDuplicate, "the specified rule %s already exists", describeRule(r))
			}
			r.ID = st.newID("sgr")
			*list = append(*list, r)
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// RevokeSecurityGroupRules removes rules from a group.
func (m *Model) RevokeSecurityGroupRules(groupID string, egress bool, perms []Permission) error {
	rules, err := Rules(perms)
	if err != nil {
		return err
	}
	return m.update(func(st *State) error {
		g, ok := st.SecurityGroups[groupID]
		if !ok {
			return groupNotFound(groupID)
		}
		list := &g.Ingress
		if egress {
			list = &g.Egress
		}
		for _, r := range rules {
			i := slices.IndexFunc(*list, func(x Rule) bool { return sameRule(x, r) })
			if i < 0 {
				return errorf(CodeInvalidPermissionNotFound, "The specified rule does not exist in this security group.")
			}
			*list = slices.Delete(*list, i, i+1)
		}
		return nil
	})
}

func checkPeerGroup(st *State, g *SecurityGroup, r Rule) error {
	if r.GroupID == "" {
		return nil
	}
	peer, ok := st.SecurityGroups[r.GroupID]
	if !ok || peer.VPCID != g.VPCID {
		return groupNotFound(r.GroupID)
	}
	return nil
}

func sameRule(a, b Rule) bool {
	return a.Protocol == b.Protocol && a.FromPort == b.FromPort && a.ToPort == b.ToPort && a.CIDR == b.CIDR && a.GroupID == b.GroupID
}

func describeRule(r Rule) string {
	peer := r.GroupID
	if peer == "" {
		peer = r.CIDR.String()
	}
	return fmt.Sprintf("\"peer: %s, %s, from port: %d, to port: %d, ALLOW\"", peer, strings.ToUpper(r.Protocol), r.FromPort, r.ToPort)
}

// checkGroups verifies that every group exists in the VPC.
func checkGroups(st *State, vpcID string, ids []string) error {
	for _, id := range ids {
		g, ok := st.SecurityGroups[id]
		if !ok || g.VPCID != vpcID {
			return groupNotFound(id)
		}
	}
	return nil
}
