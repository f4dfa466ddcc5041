package localvpc

import (
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/imds"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// This file is what the instance metadata service knows of the model: the
// caller's instance at once, its interfaces and addresses as they were a
// metadata lag ago.

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
