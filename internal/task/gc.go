package task

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// GCReport says what GC found and released.
type GCReport struct {
	Finished    []string // tasks whose interrupted launch or teardown GC completed
	OrphanENIs  []string // tagged ENIs of this instance whose task is gone
	OrphanNetns []string // task namespaces no record claims
	Forgotten   []string // finished records removed from the store
	Spared      []string // what looked orphaned but may be alive, and why
}

// Empty reports that GC released nothing and spared nothing (forgetting
// finished records is housekeeping, not news).
func (g GCReport) Empty() bool {
	return len(g.Finished)+len(g.OrphanENIs)+len(g.OrphanNetns)+len(g.Spared) == 0
}

func (g GCReport) String() string {
	s := fmt.Sprintf("finished %d task(s) %v, deleted %d orphan ENI(s) %v, removed %d orphan namespace(s) %v, forgot %d finished record(s)",
		len(g.Finished), g.Finished, len(g.OrphanENIs), g.OrphanENIs, len(g.OrphanNetns), g.OrphanNetns, len(g.Forgotten))
	if len(g.Spared) > 0 {
		s += fmt.Sprintf("; left alone: %s", strings.Join(g.Spared, "; "))
	}
	return s
}

// defaultOrphanGrace is how old an ENI of another store must be before GC
// takes it for an orphan: a launch records its task before creating the
// ENI, but a store GC cannot read may be mid-launch.
const defaultOrphanGrace = 5 * time.Minute

// GC finishes every task of this store whose owning process is gone,
// deletes ENIs tagged for this instance whose task is provably gone, and
// removes task namespaces that nothing alive claims. It harms nothing
// alive: a task of this store is left alone while its supervisor runs; a
// tagged ENI without a record here is left alone while a process runs in
// its task's namespace, and, when another store recorded it, until it is
// older than the grace period and that store (when GC can read it) does
// not own it alive.
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
	foreign := map[string]bool{} // short IDs of tasks another store may own
	for _, e := range enis {
		id := e.Tags[TagTask]
		if live[id] || l.launching(id) {
			continue
		}
		orphan := &Record{ID: id, ENIID: e.ID, MAC: e.MAC.String(), AttachmentID: e.AttachmentID, InstanceID: l.Identity.InstanceID, State: StateStopping}
		if len(id) < 12 {
			orphan.ID = (id + strings.Repeat("0", 12))[:12]
		}
		if why := l.mayBeAlive(e, orphan); why != "" {
			rep.Spared = append(rep.Spared, fmt.Sprintf("ENI %s: %s", e.ID, why))
			foreign[orphan.ShortID()] = true
			continue
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
		if l.claimed(n, live) || foreign[strings.TrimPrefix(n, mine)] {
			continue
		}
		// A namespace some process is in belongs to a task that runs,
		// whoever launched it.
		if proc.AnyInNamespace(netops.NamedNSPath(n)) {
			rep.Spared = append(rep.Spared, fmt.Sprintf("namespace %s: a process runs in it", n))
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

// mayBeAlive says why a tagged ENI that this store has no record of may
// still belong to a live task ("" when its task is provably gone).
func (l *Launcher) mayBeAlive(e cloud.ENI, orphan *Record) string {
	if proc.AnyInNamespace(netops.NamedNSPath(netnsName(orphan))) {
		return "a process runs in its task's namespace"
	}
	store := e.Tags[TagStore]
	if store != "" && store == l.StoreID {
		return "" // ours, and we have no record: gone
	}
	grace := l.OrphanGrace
	if grace <= 0 {
		grace = defaultOrphanGrace
	}
	// Untagged with a time, it predates these tags: old enough.
	if created, err := time.Parse(time.RFC3339, e.Tags[TagCreated]); err == nil && time.Since(created) < grace {
		return fmt.Sprintf("another store's (%s), created %s ago, less than the grace period %s", orDefault(e.Tags[TagStateDir], "unknown"), time.Since(created).Round(time.Second), grace)
	}
	if dir := e.Tags[TagStateDir]; dir != "" {
		s := Host{StateDir: dir}.Store(l.Identity.InstanceID)
		if r, err := s.Get(e.Tags[TagTask]); err == nil && !r.State.Done() && r.SupervisorAlive() {
			return fmt.Sprintf("task %s of the store in %s runs", r.ShortID(), dir)
		}
	}
	return ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
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
// CNI DEL (the device may still be in a task namespace; vpc-eni's DEL
// needs only the MAC), detach, delete. The orphan has no record and gets
// none.
func (l *Launcher) releaseENI(ctx context.Context, r *Record) error {
	r.unrecorded = true
	r.Netns = netops.NamedNSPath(netnsName(r))
	return l.Teardown(ctx, r, StateStopped)
}
