package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// Endpoint serves task metadata at 169.254.170.2 on the instance, in the
// shape of ECS task metadata v4. A task reaches it only through its
// metadata bridge, and is identified by its address on that bridge: a task
// asking for another task's ID is refused.
type Endpoint struct {
	Store  Store
	Region string
	Zone   string
	// Dir holds the lock and PID files of EnsureEndpoint. When set, an
	// idle endpoint decides to leave only while it holds that lock, so a
	// launcher never finds it answering just before it goes.
	Dir string
	// CheckPort makes the endpoint answer a task only over a connection
	// that came in by the task's own bridge port (see arrival.go), not
	// just from its address, which a task with NET_ADMIN can take.
	CheckPort bool
}

// Network is one entry of the "Networks" list of ECS task metadata v4,
// with vpcnet's ENI ID and security groups added.
type Network struct {
	AttachmentIndex          int      `json:"AttachmentIndex"`
	NetworkMode              string   `json:"NetworkMode"`
	IPv4Addresses            []string `json:"IPv4Addresses"`
	IPv4SubnetCIDRBlock      string   `json:"IPv4SubnetCIDRBlock"`
	IPv6Addresses            []string `json:"IPv6Addresses,omitempty"`
	IPv6SubnetCIDRBlock      string   `json:"IPv6SubnetCIDRBlock,omitempty"`
	MACAddress               string   `json:"MACAddress"`
	PrivateDNSName           string   `json:"PrivateDNSName"`
	SubnetGatewayIPv4Address string   `json:"SubnetGatewayIpv4Address"`
	DomainNameServers        []string `json:"DomainNameServers"`
	NetworkInterfaceID       string   `json:"NetworkInterfaceId"`
	SecurityGroupIDs         []string `json:"SecurityGroupIds"`
}

// Container is the container metadata document (GET /v4/<id>).
type Container struct {
	DockerID      string            `json:"DockerId"`
	Name          string            `json:"Name"`
	DesiredStatus string            `json:"DesiredStatus"`
	KnownStatus   string            `json:"KnownStatus"`
	Labels        map[string]string `json:"Labels"`
	CreatedAt     time.Time         `json:"CreatedAt"`
	Type          string            `json:"Type"`
	Networks      []Network         `json:"Networks"`
}

// TaskMetadata is the task metadata document (GET /v4/<id>/task).
type TaskMetadata struct {
	Cluster          string      `json:"Cluster"`
	TaskARN          string      `json:"TaskARN"`
	Family           string      `json:"Family"`
	Revision         string      `json:"Revision"`
	DesiredStatus    string      `json:"DesiredStatus"`
	KnownStatus      string      `json:"KnownStatus"`
	AvailabilityZone string      `json:"AvailabilityZone"`
	LaunchType       string      `json:"LaunchType"`
	PullStartedAt    time.Time   `json:"PullStartedAt"`
	Containers       []Container `json:"Containers"`
}

func (e Endpoint) container(r Record) Container {
	status := strings.ToUpper(string(r.State))
	n := Network{
		NetworkMode:              "awsvpc",
		IPv4SubnetCIDRBlock:      r.SubnetCIDR.String(),
		MACAddress:               r.MAC,
		SubnetGatewayIPv4Address: netip.PrefixFrom(r.Gateway, r.SubnetCIDR.Bits()).String(),
		NetworkInterfaceID:       r.ENIID,
		SecurityGroupIDs:         r.Groups,
		DomainNameServers:        []string{},
	}
	for _, a := range r.Addresses {
		n.IPv4Addresses = append(n.IPv4Addresses, a.String())
	}
	for _, a := range r.IPv6 {
		n.IPv6Addresses = append(n.IPv6Addresses, a.String())
	}
	if r.SubnetIPv6.IsValid() {
		n.IPv6SubnetCIDRBlock = r.SubnetIPv6.String()
	}
	if len(r.Addresses) > 0 {
		n.PrivateDNSName = "ip-" + strings.ReplaceAll(r.Addresses[0].String(), ".", "-") + "." + e.Region + ".compute.internal"
	}
	return Container{
		DockerID: r.ID, Name: taskName(&r), DesiredStatus: status, KnownStatus: status,
		Labels: map[string]string{"vpcnet.task-id": r.ID}, CreatedAt: r.Created, Type: "NORMAL",
		Networks: []Network{n},
	}
}

// ServeHTTP answers /v4/<task-id> and /v4/<task-id>/task, and /v4 and
// /v4/task for the calling task.
func (e Endpoint) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) == 0 || parts[0] != "v4" {
		http.Error(w, "not found: task metadata is under /v4/", http.StatusNotFound)
		return
	}
	caller, err := e.caller(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	rest := parts[1:]
	if len(rest) > 0 && rest[0] != "task" {
		if rest[0] != caller.ID {
			http.Error(w, "forbidden: that is not the calling task's ID", http.StatusForbidden)
			return
		}
		rest = rest[1:]
	}
	switch {
	case len(rest) == 0:
		writeJSON(w, e.container(caller))
	case len(rest) == 1 && rest[0] == "task":
		status := strings.ToUpper(string(caller.State))
		writeJSON(w, TaskMetadata{
			Cluster:          "vpcnet",
			TaskARN:          fmt.Sprintf("arn:aws:ecs:%s:000000000000:task/vpcnet/%s", e.Region, caller.ID),
			Family:           taskName(&caller),
			Revision:         "1",
			DesiredStatus:    status,
			KnownStatus:      status,
			AvailabilityZone: e.Zone,
			LaunchType:       "EC2",
			PullStartedAt:    caller.Created,
			Containers:       []Container{e.container(caller)},
		})
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// caller finds the task whose metadata-bridge address sent the request.
func (e Endpoint) caller(req *http.Request) (Record, error) {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return Record{}, fmt.Errorf("cannot parse caller address %q", req.RemoteAddr)
	}
	records, err := e.Store.List()
	if err != nil {
		return Record{}, err
	}
	for _, r := range records {
		if r.State.Done() || r.BridgeAddr != ap.Addr().Unmap() {
			continue
		}
		if e.CheckPort {
			a, _ := req.Context().Value(arrivalKey{}).(arrival)
			if r.BridgePort == "" || a.port != r.BridgePort {
				slog.Warn("task metadata request from a task's address through another port: refused",
					"addr", ap.Addr(), "task", r.ShortID(), "port", a.port, "taskPort", r.BridgePort)
				return Record{}, fmt.Errorf("forbidden: %s is task %s's address, but the request did not come through its bridge port", ap.Addr(), r.ShortID())
			}
		}
		return r, nil
	}
	return Record{}, fmt.Errorf("forbidden: %s is not a running task's metadata address", ap.Addr())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ServeEndpoint runs the endpoint in the current (instance) namespace until
// ctx ends or no task has been active for idle. It owns 169.254.170.2/32 on
// lo: packets from a task's metadata bridge to it are delivered locally.
func ServeEndpoint(ctx context.Context, e Endpoint, idle time.Duration) error {
	lo, err := netops.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netops.AddAddress(lo, netops.HostPrefix(EndpointAddr)); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(EndpointAddr.String(), "80"))
	if err != nil {
		return fmt.Errorf("failed to listen on %s:80: %w", EndpointAddr, err)
	}
	// Only the endpoint that listens owns the marks: one that lost the
	// race for the address must not remove them on its way out.
	if e.CheckPort {
		if err := ensureArrivalMarks(); err != nil {
			ln.Close()
			return err
		}
		defer removeArrivalMarks()
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second, ConnContext: connArrival}
	shutdown := func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	idler := make(chan struct{})
	defer func() {
		cancel()
		<-idler // it may still be retiring: removing the PID file
	}()
	go func() {
		defer close(idler)
		// Exit once no task has needed the endpoint for a while: it is
		// started on demand by the first task on the instance.
		t := time.NewTicker(max(idle/4, 10*time.Millisecond))
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				shutdown()
				return
			case <-t.C:
				if active(e.Store) {
					last = time.Now()
				} else if time.Since(last) > idle {
					if e.retire(shutdown) {
						return
					}
					last = time.Now()
				}
			}
		}
	}()
	slog.Info("task metadata endpoint listening", "addr", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// retire stops serving if no task needs the endpoint, deciding under the
// lock that launchers take in EnsureEndpoint: a launcher that took the lock
// first has recorded its task (so the endpoint stays); one that takes it
// after finds the listener closed (so it starts a new endpoint).
func (e Endpoint) retire(shutdown func()) bool {
	if e.Dir != "" {
		unlock, err := lockEndpoint(e.Dir)
		if err != nil {
			return false
		}
		defer unlock()
	}
	if active(e.Store) {
		return false
	}
	if e.Dir != "" {
		pidFile := filepath.Join(e.Dir, "endpoint.pid")
		if readPID(pidFile) == os.Getpid() {
			_ = os.Remove(pidFile)
		}
	}
	shutdown()
	return true
}

func active(s Store) bool {
	records, err := s.List()
	if err != nil {
		return true // cannot tell; stay
	}
	for _, r := range records {
		if !r.State.Done() {
			return true
		}
	}
	return false
}

// EnsureEndpoint makes sure the instance's endpoint daemon runs, starting
// it with start if not. A lock file serialises concurrent launchers and a
// PID file remembers the daemon.
func EnsureEndpoint(dir string, start func() (int, error)) error {
	unlock, err := lockEndpoint(dir)
	if err != nil {
		return err
	}
	defer unlock()
	pidFile := filepath.Join(dir, "endpoint.pid")
	if pid := readPID(pidFile); proc.Alive(pid) && answers() {
		return nil
	}
	pid, err := start()
	if err != nil {
		return fmt.Errorf("failed to start the task metadata endpoint: %w", err)
	}
	if err := writePrivate(pidFile, []byte(strconv.Itoa(pid))); err != nil {
		return err
	}
	// Wait until it answers, so the task's first request does not race it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if answers() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the task metadata endpoint (pid %d) did not start listening on %s:80", pid, EndpointAddr)
}

// lockEndpoint takes the lock that serialises starting and retiring the
// endpoint of the instance whose state is in dir.
func lockEndpoint(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "endpoint.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open the endpoint lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("failed to lock the endpoint lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	}, nil
}

// StopEndpoint stops the daemon recorded in dir, if it runs.
func StopEndpoint(dir string) {
	if pid := readPID(filepath.Join(dir, "endpoint.pid")); proc.Alive(pid) && proc.RunsBinary(pid, "vpcnet") {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
}

func answers() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(EndpointAddr.String(), "80"), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
