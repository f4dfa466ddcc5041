package task

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// Tags put on every task ENI, so that GC finds ENIs whose task is gone
// even when the launcher died before it could record the ENI.
const (
	TagTask     = "vpcnet:task-id"
	TagInstance = "vpcnet:instance-id"
	TagName     = "Name"
	// TagStore is the identity of the task store that recorded the task
	// (see Host.StoreID), and TagStateDir the state directory holding it:
	// GC of another store leaves the ENI alone while its own store may
	// still know the task.
	TagStore    = "vpcnet:store"
	TagStateDir = "vpcnet:state-dir"
	// TagCreated is when the launcher created the ENI (RFC 3339): EC2
	// does not say.
	TagCreated = "vpcnet:created-at"
)

// NetnsPrefix starts the name of every task namespace.
const NetnsPrefix = "vpcnet-task-"

// netnsName names a task's namespace after its instance and ID: on a local
// VPC every instance shares /var/run/netns, and GC on one instance must
// recognise its own namespaces without touching another's.
func netnsName(r *Record) string {
	return NetnsPrefix + r.InstanceID + "-" + r.ShortID()
}

// Launcher starts and stops tasks on the instance it runs on.
type Launcher struct {
	Cloud    *cloud.Client
	Identity cloud.Identity
	Store    Store
	Net      Networks
	Progress *Progress
	// EnsureEndpoint starts the instance's task metadata endpoint if it
	// does not run yet (nil: someone else runs it).
	EnsureEndpoint func() error
	// DeviceTimeout bounds the wait for an attached ENI's device to
	// appear on the instance (AWS: usually a few seconds).
	DeviceTimeout time.Duration
	// APIErrors, when set, sees every failed EC2 attempt, so that a step
	// cut short by its deadline can say what EC2 kept answering.
	APIErrors *cloud.APIErrors
	// Runtime runs the task's command in its sandbox.
	Runtime Runtime
	// Hidden are the directories a task must not see (vpcnet's state).
	Hidden []string
	// StoreID and StateDir identify the store on the ENIs it tags.
	StoreID, StateDir string
	// OrphanGrace is how old an ENI recorded by another store must be
	// before GC takes it for an orphan (default 5 minutes).
	OrphanGrace time.Duration
}

// Spec is what a user asks for.
type Spec struct {
	Name     string
	SubnetID string
	Groups   []string
	Command  []string
	Sandbox  Sandbox
}

// maxNameLen is the longest task name: EC2 tag values hold 256 characters.
const maxNameLen = 255

// Validate checks what a user asked for before anything is created.
func (s Spec) Validate() error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	if s.SubnetID == "" {
		return errors.New("--subnet: missing: say in which subnet the task's ENI is created")
	}
	if len(s.Command) == 0 {
		return errors.New("no command: give the task's command after --")
	}
	if _, err := ParseCaps(s.Sandbox.CapAdd); err != nil {
		return err
	}
	return nil
}

// ValidateName checks a task name: at most 255 characters, all printable
// (no newline, tab or other control character: the name is a column of
// `task ls` and an EC2 tag). An empty name is allowed.
func ValidateName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("--name %q: not valid UTF-8", name)
	}
	if n := utf8.RuneCountInString(name); n > maxNameLen {
		return fmt.Errorf("--name: %d characters, at most %d allowed", n, maxNameLen)
	}
	pos := 0 // in characters, as the user counts, not bytes
	for _, c := range name {
		pos++
		if !unicode.IsPrint(c) {
			return fmt.Errorf("--name %q: character %d (%U) is not printable: no newlines, tabs or control characters", name, pos, c)
		}
	}
	return nil
}

// NewID returns a new task ID: 32 hex digits, like an ECS task ID.
func NewID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// step runs one named step: it reports progress, records the timing and
// marks the point for crash tests.
func (l *Launcher) step(r *Record, name string, fn func() (string, error)) error {
	crashpoint.At("task/" + name)
	l.APIErrors.Reset()
	start := time.Now()
	detail, err := fn()
	d := time.Since(start)
	err = l.APIErrors.Explain(err)
	l.Progress.step(name, detail, d, err)
	r.StepTimings = append(r.StepTimings, Timing{Step: name, Duration: d})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Start creates everything a task needs, up to a configured namespace,
// recording each resource before or as it is created. On failure it
// releases what it made and records the task as failed.
func (l *Launcher) Start(ctx context.Context, id string, spec Spec, supervisor int) (*Record, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	caps, _ := ParseCaps(spec.Sandbox.CapAdd)
	r := &Record{
		ID: id, Name: spec.Name, InstanceID: l.Identity.InstanceID,
		SubnetID: spec.SubnetID, Groups: spec.Groups, Command: spec.Command,
		Sandbox: Sandbox{CapAdd: caps, Privileged: spec.Sandbox.Privileged},
		State:   StateStarting, Created: time.Now().UTC(),
		Supervisor: supervisor, SupervisorStart: proc.StartTime(supervisor),
	}
	r.Netns = netops.NamedNSPath(netnsName(r))
	// Recorded only if no live task of the instance has the name: in the
	// same transaction, so two launches of one name cannot both pass.
	if err := l.Store.Create(r); err != nil {
		return nil, err
	}
	if err := l.setUp(ctx, r); err != nil {
		r.Error = err.Error()
		// Teardown gets its own time: the set-up deadline may be what
		// failed, and releasing the ENI must still happen.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if terr := l.Teardown(tctx, r, StateFailed); terr != nil {
			err = fmt.Errorf("%w (and releasing what was made failed: %v; `vpcnet task gc` retries)", err, terr)
		}
		return r, err
	}
	return r, nil
}

func (l *Launcher) setUp(ctx context.Context, r *Record) error {
	err := l.step(r, "describe-subnet", func() (string, error) {
		subnet, err := l.Cloud.DescribeSubnet(ctx, r.SubnetID)
		if err != nil {
			return "", err
		}
		// An ENI attaches only to an instance in its subnet's zone: say so
		// before creating one that EC2 would refuse to attach.
		if l.Identity.Zone != "" && subnet.Zone != "" && subnet.Zone != l.Identity.Zone {
			return "", fmt.Errorf("--subnet %s is in availability zone %s, but instance %s is in %s: an ENI attaches only to an instance in its subnet's zone",
				r.SubnetID, subnet.Zone, l.Identity.InstanceID, l.Identity.Zone)
		}
		r.SubnetCIDR, r.Gateway, r.SubnetIPv6 = subnet.CIDR, subnet.Gateway, subnet.IPv6
		return subnet.CIDR.String(), nil
	})
	if err != nil {
		return err
	}

	var eni cloud.ENI
	err = l.step(r, "create-eni", func() (string, error) {
		eni, err = l.Cloud.CreateENI(ctx, cloud.CreateENIInput{
			SubnetID:    r.SubnetID,
			Groups:      r.Groups,
			Description: "vpcnet task " + r.ID,
			Tags:        l.tags(r),
		})
		if err != nil {
			return "", err
		}
		r.ENIID, r.MAC, r.Addresses, r.IPv6 = eni.ID, eni.MAC.String(), eni.IPv4, eni.IPv6
		// With no group asked for, EC2 applies the VPC's default group:
		// record the groups the ENI really has (task metadata shows them).
		if len(eni.Groups) > 0 {
			r.Groups = eni.Groups
		}
		return fmt.Sprintf("%s %s", eni.ID, addrList(eni.IPv4)), l.Store.Put(r)
	})
	if err != nil {
		return err
	}

	err = l.step(r, "attach-eni", func() (string, error) {
		att, idx, err := l.Cloud.AttachENI(ctx, r.ENIID, r.InstanceID)
		if err != nil {
			return "", l.explainAttach(ctx, err)
		}
		r.AttachmentID, r.DeviceIndex = att, idx
		return fmt.Sprintf("%s device %d", att, idx), l.Store.Put(r)
	})
	if err != nil {
		return err
	}

	err = l.step(r, "wait-device", func() (string, error) {
		dctx, cancel := context.WithTimeout(ctx, l.deviceTimeout())
		defer cancel()
		link, err := netops.WaitForLink(dctx, "/proc/self/ns/net", eni.MAC)
		if err != nil {
			return "", fmt.Errorf("the ENI's device (MAC %s) did not appear on the instance: %w", eni.MAC, err)
		}
		return link.Attrs().Name, nil
	})
	if err != nil {
		return err
	}

	err = l.step(r, "create-netns", func() (string, error) {
		n, err := netops.EnsureNamedNS(netnsName(r))
		if err != nil {
			return "", err
		}
		defer n.Close()
		// Runtimes bring loopback up with the loopback plugin; a task
		// expects 127.0.0.1 to work.
		return r.Netns, netops.LoopbackUp(n)
	})
	if err != nil {
		return err
	}

	err = l.step(r, "cni-eni", func() (string, error) {
		if _, err := l.Net.AddENI(ctx, r); err != nil {
			return "", err
		}
		return eniIfName + " " + addrList(r.Addresses), nil
	})
	if err != nil {
		return err
	}

	err = l.step(r, "cni-bridge", func() (string, error) {
		a, port, err := l.Net.AddBridge(ctx, r)
		if err != nil {
			return "", err
		}
		r.BridgeAddr, r.BridgePort = a, port
		return bridgeIfName + " " + a.String() + " port " + port, l.Store.Put(r)
	})
	if err != nil || l.EnsureEndpoint == nil {
		return err
	}
	return l.step(r, "metadata-endpoint", func() (string, error) {
		return EndpointAddr.String(), l.EnsureEndpoint()
	})
}

// explainAttach turns EC2's attach errors into messages a person can act on.
func (l *Launcher) explainAttach(ctx context.Context, err error) error {
	if cloud.APIErrorCode(err) != cloud.CodeAttachmentLimitExceeded {
		return err
	}
	limit, lerr := l.Cloud.InstanceENILimit(ctx, l.Identity.InstanceType)
	if lerr != nil {
		return fmt.Errorf("instance %s has no free network interface slot: %w", l.Identity.InstanceID, err)
	}
	return fmt.Errorf("instance %s (%s) allows at most %d network interfaces, the primary included, and all are in use: %w",
		l.Identity.InstanceID, l.Identity.InstanceType, limit, err)
}

func (l *Launcher) deviceTimeout() time.Duration {
	if l.DeviceTimeout > 0 {
		return l.DeviceTimeout
	}
	return 60 * time.Second
}

// Teardown releases everything of a task in reverse order of creation and
// records final as its state. Every step tolerates what is already gone, so
// it can be repeated after a crash at any point.
func (l *Launcher) Teardown(ctx context.Context, r *Record, final State) error {
	if r.State != StateFailed && r.State != StateStopped {
		r.State = StateStopping
		if err := l.save(r); err != nil {
			return err
		}
	}
	var errs []error
	try := func(name string, fn func() (string, error)) {
		if err := l.step(r, name, fn); err != nil {
			errs = append(errs, err)
		}
	}
	try("stop-command", func() (string, error) { return "", l.killTask(r) })
	try("cni-del", func() (string, error) { return "", l.Net.Del(ctx, r) })
	try("delete-netns", func() (string, error) {
		return "", netops.DeleteNamedNS(netnsName(r))
	})
	if len(errs) > 0 {
		// The ENI may still be inside the task namespace: detaching it
		// now would pull the device out from under a half-done DEL.
		return errors.Join(errs...)
	}
	if r.ENIID == "" {
		if err := l.adoptTaggedENI(ctx, r); err != nil {
			return err
		}
	}
	if r.ENIID != "" {
		try("detach-eni", func() (string, error) {
			if r.AttachmentID == "" {
				if e, err := l.Cloud.DescribeENI(ctx, r.ENIID); err == nil {
					r.AttachmentID = e.AttachmentID
				}
			}
			if r.AttachmentID == "" {
				return "not attached", nil
			}
			return r.AttachmentID, l.Cloud.DetachENI(ctx, r.AttachmentID, false)
		})
		try("delete-eni", func() (string, error) { return r.ENIID, l.Cloud.DeleteENI(ctx, r.ENIID) })
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	r.State = final
	return l.save(r)
}

// adoptTaggedENI finds the ENI of a task whose launcher died between
// CreateNetworkInterface and recording its ID: the tags say whose it is.
func (l *Launcher) adoptTaggedENI(ctx context.Context, r *Record) error {
	enis, err := l.Cloud.ENIsByFilter(ctx, map[string][]string{"tag:" + TagTask: {r.ID}})
	if err != nil {
		return err
	}
	for _, e := range enis {
		r.ENIID, r.MAC, r.AttachmentID = e.ID, e.MAC.String(), e.AttachmentID
	}
	return nil
}

// tags are the tags of a task's ENI.
func (l *Launcher) tags(r *Record) map[string]string {
	t := map[string]string{TagTask: r.ID, TagInstance: r.InstanceID, TagName: taskName(r),
		TagCreated: time.Now().UTC().Format(time.RFC3339)}
	if l.StoreID != "" {
		t[TagStore] = l.StoreID
	}
	if l.StateDir != "" {
		t[TagStateDir] = l.StateDir
	}
	return t
}

func taskName(r *Record) string {
	if r.Name != "" {
		return r.Name
	}
	return "task-" + r.ID[:8]
}

func addrList(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ","
		}
		s += a.String()
	}
	return s
}

// save records r unless it is an unrecorded orphan.
func (l *Launcher) save(r *Record) error {
	if r.unrecorded {
		return nil
	}
	return l.Store.Put(r)
}
