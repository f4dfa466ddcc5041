package localvpc

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// plan is the datapath the model asks for now, and the attachment state
// changes that become true once the datapath matches it.
type plan struct {
	spec      fabric.Spec
	attaching []string  // attachments whose device Apply creates
	detaching []string  // attachments whose device Apply removes
	wake      time.Time // when a delayed attachment becomes due (zero: none)
	state     vpc.State
}

// spec turns the model into the datapath's desired state. An attachment
// that is still "attaching" gets its device only once the configured
// attach delay has passed, as on AWS where the device shows up on the
// instance seconds after the API call returned.
func (s *Server) spec(now time.Time) plan {
	st := s.model.Snapshot()
	faults := s.faultsNow()
	p := plan{state: st, spec: fabric.Spec{
		Name:       s.cfg.Name,
		LocalAddrs: append([]netip.Addr{IMDSv4, IMDSv6, VPCEndpointAddr(s.cfg)}, endpointAddrs(st)...),
	}}
	if s.cfg.ExternalHost {
		p.spec.External = ExternalHostAddr
	}
	for _, sn := range vpc.SortedValues(st.Subnets) {
		p.spec.Subnets = append(p.spec.Subnets, fabric.Subnet{ID: sn.ID, IPv4: sn.CIDR, IPv6: sn.IPv6CIDR})
	}
	running := map[string]bool{}
	for _, in := range instancesInOrder(st) {
		running[in.ID] = true
		p.spec.Instances = append(p.spec.Instances, fabric.Instance{ID: in.ID})
	}
	for _, n := range vpc.SortedValues(st.NetworkInterfaces) {
		a := n.Attachment
		if a == nil || !running[a.InstanceID] {
			continue
		}
		switch a.Status {
		case vpc.AttachmentAttached:
		case vpc.AttachmentAttaching:
			due := a.AttachTime.Add(faults.AttachDelayFor(a.ID))
			if now.Before(due) {
				if p.wake.IsZero() || due.Before(p.wake) {
					p.wake = due
				}
				continue
			}
			p.attaching = append(p.attaching, a.ID)
		case vpc.AttachmentDetaching:
			p.detaching = append(p.detaching, a.ID)
			continue
		default:
			continue
		}
		p.spec.Interfaces = append(p.spec.Interfaces, fabricInterface(n))
	}
	for _, g := range vpc.SortedValues(st.SecurityGroups) {
		p.spec.Groups = append(p.spec.Groups, fabric.SecurityGroup{ID: g.ID, Ingress: fabricRules(g.Ingress), Egress: fabricRules(g.Egress)})
	}
	return p
}

func fabricInterface(n *vpc.NetworkInterface) fabric.Interface {
	mac, _ := net.ParseMAC(n.MAC)
	fi := fabric.Interface{
		ID: n.ID, InstanceID: n.Attachment.InstanceID, DeviceIndex: int(n.Attachment.DeviceIndex),
		MAC: mac, SubnetID: n.SubnetID,
		IPv4Prefixes: slices.Clone(n.IPv4Prefixes), IPv6: slices.Clone(n.IPv6Addresses), IPv6Prefixes: slices.Clone(n.IPv6Prefixes),
		SourceDestCheck: n.SourceDestCheck, Groups: slices.Clone(n.Groups),
	}
	for _, ip := range n.PrivateIPs { // primary first, as the model keeps them
		fi.IPv4 = append(fi.IPv4, ip.Address)
	}
	return fi
}

func fabricRules(rules []vpc.Rule) []fabric.Rule {
	out := make([]fabric.Rule, 0, len(rules))
	for _, r := range rules {
		fr := fabric.Rule{Protocol: r.Protocol, FromPort: int(r.FromPort), ToPort: int(r.ToPort)}
		if r.CIDR.IsValid() {
			fr.CIDRs = []netip.Prefix{r.CIDR}
		}
		if r.GroupID != "" {
			fr.Groups = []string{r.GroupID}
		}
		out = append(out, fr)
	}
	return out
}

// reconcileLoop keeps the datapath equal to the model: after every change,
// when a delayed attachment falls due, and when an ENI's device was lost
// with a namespace it had been moved into.
func (s *Server) reconcileLoop(ctx context.Context, changes <-chan struct{}, lost <-chan string) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p := s.spec(time.Now())
		s.metadata.record(p.state)
		next := p.wake
		start := time.Now()
		if err := fabric.Apply(ctx, p.spec); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("datapath apply failed; retrying", "err", err)
			next = time.Now().Add(time.Second)
		} else {
			s.log.Debug("datapath applied", "took", time.Since(start), "interfaces", len(p.spec.Interfaces))
			for _, id := range p.attaching {
				if err := s.model.CompleteAttach(id); err != nil {
					s.log.Warn("cannot complete attachment", "attachment", id, "err", err)
				}
			}
			for _, id := range p.detaching {
				if err := s.model.CompleteDetach(id); err != nil {
					s.log.Warn("cannot complete detachment", "attachment", id, "err", err)
				}
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-s.replan:
		case id := <-lost:
			s.log.Info("ENI device lost with its namespace; bringing it back to its instance", "eni", id)
		case <-timer.C:
		}
	}
}

func sortInstances(in []*vpc.Instance) {
	sort.Slice(in, func(i, j int) bool {
		if !in[i].LaunchTime.Equal(in[j].LaunchTime) {
			return in[i].LaunchTime.Before(in[j].LaunchTime)
		}
		return in[i].ID < in[j].ID
	})
}
