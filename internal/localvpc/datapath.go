package localvpc

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/imds"
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
		LocalAddrs: []netip.Addr{IMDSv4, IMDSv6, VPCEndpointAddr(s.cfg)},
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

// laggedDirectory is the metadata service's view of the model: who is
// calling is known at once (the hypervisor knows its ENIs), but what the
// service says about the instance lags the model by the configured delay,
// as EC2's metadata trails its API.
type laggedDirectory struct {
	model *vpc.Model
	mu    sync.Mutex
	lag   time.Duration
	hist  []stamped
}

type stamped struct {
	at time.Time
	st vpc.State
}

func newLaggedDirectory(m *vpc.Model, lag time.Duration) *laggedDirectory {
	d := &laggedDirectory{model: m, lag: lag}
	d.record(m.Snapshot())
	return d
}

func (d *laggedDirectory) setLag(lag time.Duration) {
	d.mu.Lock()
	d.lag = lag
	d.mu.Unlock()
}

// record adds a state to the history, keeping only what the lag can still
// show.
func (d *laggedDirectory) record(st vpc.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	d.hist = append(d.hist, stamped{now, st})
	cutoff := now.Add(-d.lag)
	// Keep the newest entry at or before the cutoff and everything after.
	keep := 0
	for i, h := range d.hist {
		if !h.at.After(cutoff) {
			keep = i
		}
	}
	d.hist = d.hist[keep:]
}

func (d *laggedDirectory) view() vpc.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	cutoff := time.Now().Add(-d.lag)
	v := d.hist[0].st
	for _, h := range d.hist {
		if !h.at.After(cutoff) {
			v = h.st
		}
	}
	return v
}

// Lookup implements imds.Directory.
func (d *laggedDirectory) Lookup(addr netip.Addr) (imds.Instance, bool) {
	eni, ok := d.model.NetworkInterfaceByAddress(addr)
	if !ok || eni.Attachment == nil {
		return imds.Instance{}, false
	}
	id := eni.Attachment.InstanceID
	st := d.view()
	in, ok := st.Instances[id]
	if !ok {
		cur, err := d.model.Instance(id)
		if err != nil {
			return imds.Instance{}, false
		}
		st = d.model.Snapshot()
		in = &cur
	}
	out := imds.Instance{
		ID: in.ID, Type: in.Type, AMIID: in.ImageID, AccountID: st.AccountID, LaunchTime: in.LaunchTime,
		Region: st.Region, AvailabilityZone: in.AvailabilityZone, AvailabilityZoneID: in.AvailabilityZoneID,
		RoleName: in.RoleName,
	}
	names := d.model.SecurityGroupNames()
	for _, n := range vpc.SortedValues(st.NetworkInterfaces) {
		if n.Attachment == nil || n.Attachment.InstanceID != id || n.Attachment.Status != vpc.AttachmentAttached {
			continue
		}
		out.Interfaces = append(out.Interfaces, metadataInterface(st, n, names))
	}
	sort.Slice(out.Interfaces, func(i, j int) bool { return out.Interfaces[i].DeviceNumber < out.Interfaces[j].DeviceNumber })
	if in.RoleName != "" {
		if k, err := d.model.InstanceCredentials(id); err == nil {
			out.Credentials = imds.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
				Token: k.SessionToken, Expiration: k.Expiration, LastUpdated: k.Issued}
		}
	}
	return out, true
}

func metadataInterface(st vpc.State, n *vpc.NetworkInterface, groupNames map[string]string) imds.Interface {
	mi := imds.Interface{
		MAC: n.MAC, InterfaceID: n.ID, DeviceNumber: int(n.Attachment.DeviceIndex),
		NetworkCard: int(n.Attachment.NetworkCardIndex), SubnetID: n.SubnetID, VPCID: n.VPCID,
		SecurityGroupIDs: slices.Clone(n.Groups),
	}
	for _, ip := range n.PrivateIPs {
		mi.LocalIPv4s = append(mi.LocalIPv4s, ip.Address.String())
	}
	for _, p := range n.IPv4Prefixes {
		mi.IPv4Prefixes = append(mi.IPv4Prefixes, p.String())
	}
	for _, a := range n.IPv6Addresses {
		mi.IPv6s = append(mi.IPv6s, a.String())
	}
	for _, p := range n.IPv6Prefixes {
		mi.IPv6Prefixes = append(mi.IPv6Prefixes, p.String())
	}
	for _, g := range n.Groups {
		mi.SecurityGroupNames = append(mi.SecurityGroupNames, groupNames[g])
	}
	if sn, ok := st.Subnets[n.SubnetID]; ok {
		mi.SubnetIPv4CIDR = sn.CIDR.String()
		if sn.IPv6CIDR.IsValid() {
			mi.SubnetIPv6CIDRs = []string{sn.IPv6CIDR.String()}
		}
	}
	if v, ok := st.VPCs[n.VPCID]; ok {
		mi.VPCIPv4CIDRs = []string{v.CIDR.String()}
		if v.IPv6CIDR.IsValid() {
			mi.VPCIPv6CIDRs = []string{v.IPv6CIDR.String()}
		}
	}
	return mi
}
