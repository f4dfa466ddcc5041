package task

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// GCReport says what GC found and released.
type GCReport struct {
	Finished    []string // tasks whose interrupted launch or teardown GC completed
	OrphanENIs  []string // tagged ENIs of this instance whose task is gone
	OrphanNetns []string // task namespaces no record claims
	Forgotten   []string // finished records removed from the store
}

func (g GCReport) String() string {
	return fmt.Sprintf("finished %d task(s) %v, deleted %d orphan ENI(s) %v, removed %d orphan namespace(s) %v, forgot %d finished record(s)",
		len(g.Finished), g.Finished, len(g.OrphanENIs), g.OrphanENIs, len(g.OrphanNetns), g.OrphanNetns, len(g.Forgotten))
}

// GC finishes every task whose owning process is gone, deletes ENIs tagged
// for this instance whose task no longer exists, removes task namespaces
// that no record claims, and forgets finished records.
func (l *Launcher) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	var errs []error
	records, err := l.Store.List()
	if err != nil {
		return rep, err
	}
	live := map[string]bool{}
	for i := range records {
		r := &records[i]
		if r.InstanceID != l.Identity.InstanceID {
			continue
		}
		if !r.State.Done() && r.SupervisorAlive() {
			live[r.ID] = true
			continue
		}
		if !r.State.Done() {
			final := StateStopped
			if r.State == StateStarting {
				final = StateFailed
			}
			if err := l.Teardown(ctx, r, final); err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", r.ID, err))
				live[r.ID] = true // keep its resources for the next try
				continue
			}
			rep.Finished = append(rep.Finished, r.ID)
		}
		if err := l.Store.Delete(r.ID); err != nil {
			errs = append(errs, err)
		}
		rep.Forgotten = append(rep.Forgotten, r.ID)
	}

	enis, err := l.Cloud.ENIsByFilter(ctx, map[string][]string{
		"tag:" + TagInstance: {l.Identity.InstanceID},
		"tag-key":            {TagTask},
	})
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range enis {
		id := e.Tags[TagTask]
		if live[id] || l.launching(id) {
			continue
		}
		orphan := &Record{ID: id, ENIID: e.ID, MAC: e.MAC.String(), AttachmentID: e.AttachmentID, InstanceID: l.Identity.InstanceID, State: StateStopping}
		if len(id) < 12 {
			orphan.ID = (id + strings.Repeat("0", 12))[:12]
		}
		if err := l.releaseENI(ctx, orphan); err != nil {
			errs = append(errs, fmt.Errorf("orphan ENI %s: %w", e.ID, err))
			continue
		}
		rep.OrphanENIs = append(rep.OrphanENIs, e.ID)
	}

	mine := NetnsPrefix + l.Identity.InstanceID + "-"
	names, err := netops.ListNamedNS(mine)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if l.claimed(n, live) {
			continue
		}
		if err := netops.DeleteNamedNS(n); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.OrphanNetns = append(rep.OrphanNetns, n)
	}
	return rep, errors.Join(errs...)
}

// launching reports whether a task that the record list did not show is
// being launched now: a launcher records its task before it creates the
// ENI and the namespace, so one that started after GC read the records
// must not lose them.
func (l *Launcher) launching(id string) bool {
	r, err := l.Store.Get(id)
	return err == nil && !r.State.Done() && r.SupervisorAlive()
}

// claimed reports whether the task namespace name belongs to a live task,
// or to one being launched now.
func (l *Launcher) claimed(name string, live map[string]bool) bool {
	for id := range live {
		if name == netnsName(&Record{ID: id, InstanceID: l.Identity.InstanceID}) {
			return true
		}
	}
	records, err := l.Store.List()
	if err != nil {
		return true // cannot tell: leave it for the next run
	}
	for _, r := range records {
		if r.InstanceID == l.Identity.InstanceID && name == netnsName(&r) && !r.State.Done() && r.SupervisorAlive() {
			return true
		}
	}
	return false
}

// releaseENI runs the ENI half of a teardown for an ENI found by its tags:
// CNI DEL (the device may still be in a task namespace), detach, delete.
// The orphan has no record and gets none.
func (l *Launcher) releaseENI(ctx context.Context, r *Record) error {
	r.unrecorded = true
	r.Netns = netops.NamedNSPath(netnsName(r))
	return l.Teardown(ctx, r, StateStopped)
}
