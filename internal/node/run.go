package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// Config is the agent's whole configuration: the pool's (aws-node's
// variables, package pool) and where the agent keeps and serves things.
type Config struct {
	Pool pool.Config

	// StatePath is the assignment store (bbolt).
	StatePath string
	// Socket is the CNI backend's unix socket.
	Socket string
	// IntrospectionAddr serves /v1/status (JSON) and /healthz; loopback.
	IntrospectionAddr string
	// MetricsAddr serves /metrics (Prometheus); empty turns it off.
	MetricsAddr string

	// EC2CallTimeout bounds one EC2 call (SDK retries included).
	EC2CallTimeout time.Duration
	// LeakedENIInterval is how often leaked ENIs are looked for: minutes,
	// not aws-node's hour.
	LeakedENIInterval time.Duration
	// NoCidrBackoff is how long after InsufficientCidrBlocks the pool uses
	// single addresses instead of prefixes.
	NoCidrBackoff time.Duration
	// StaleAssignmentAge: an assignment this old whose host veth is gone
	// is a pod whose DEL never reached the agent; reconcile releases it.
	StaleAssignmentAge time.Duration
	// DeviceTimeout bounds the wait for an attached ENI's device.
	DeviceTimeout time.Duration

	// CNIConfPath is where the node's conflist is written once the agent
	// serves (/etc/cni/net.d/10-vpcnet.conflist on Kubernetes); empty:
	// nowhere. CNIConfTemplate is a conflist file to write there instead of
	// the default (vpc-pod alone).
	CNIConfPath, CNIConfTemplate string

	// Kube is how to reach the API server on Kubernetes (none: the agent
	// has no Kubernetes side).
	Kube KubeConfig
}

// Defaults for Config's own fields.
const (
	DefaultStatePath         = "/var/lib/vpcnet/vpcnetd/state.db"
	DefaultIntrospectionAddr = "127.0.0.1:61679"
	DefaultMetricsAddr       = ":61678"
)

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		Pool:               pool.DefaultConfig(),
		StatePath:          DefaultStatePath,
		Socket:             nodeapi.DefaultSocket,
		IntrospectionAddr:  DefaultIntrospectionAddr,
		MetricsAddr:        DefaultMetricsAddr,
		EC2CallTimeout:     30 * time.Second,
		LeakedENIInterval:  time.Minute,
		NoCidrBackoff:      2 * time.Minute,
		StaleAssignmentAge: time.Minute,
		DeviceTimeout:      30 * time.Second,
	}
}

// Identity is what the node is, from instance metadata and EC2.
type Identity struct {
	InstanceID   string         `json:"instanceID"`
	InstanceType string         `json:"instanceType"`
	Region       string         `json:"region"`
	Zone         string         `json:"zone"`
	VPCID        string         `json:"vpcID"`
	VPCCIDRs     []netip.Prefix `json:"vpcCIDRs"`
	PrimaryENI   string         `json:"primaryENI"`
	PrimaryMAC   string         `json:"primaryMAC"`
	PrimaryIP    netip.Addr     `json:"primaryIP"`
	PrimaryIface string         `json:"primaryInterface"`
	SubnetID     string         `json:"subnetID"`
	SubnetCIDR   netip.Prefix   `json:"subnetCIDR"`
	Groups       []string       `json:"securityGroups"`
}

// New builds an agent: it opens the store (one agent per store) and
// restores the cooldowns; the assignments are restored by the first
// reconcile, which checks them against EC2.
func New(cfg Config, log *slog.Logger, ec2 EC2, nn NodeNetwork, id Identity, limits pool.Limits) (*Agent, error) {
	store, err := OpenStore(cfg.StatePath, 5*time.Second)
	if err != nil {
		return nil, err
	}
	cooldowns, err := store.Cooldowns()
	if err != nil {
		store.Close()
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, store: store, ec2: ec2, net: nn, id: id, limits: limits, m: newMetrics(),
		enis: map[string]*ENI{}, pending: map[string]pendingENI{}, subnets: map[string]subnetFlags{}, assigned: map[netip.Addr]Key{}, cooldowns: cooldowns,
		changed: make(chan struct{}), wake: make(chan struct{}, 1), resyncNow: make(chan struct{}, 1),
	}
	return a, nil
}

// Run serves the agent until ctx ends, then stops gracefully: the health
// service turns NOT_SERVING, in-flight calls finish, the store is closed.
// The node's networking and the pool stay as they are (a restart keeps
// every pod's address).
func (a *Agent) Run(ctx context.Context) error {
	defer a.store.Close()
	conflist, err := a.cfg.cniConflist()
	if err != nil {
		return err
	}
	if err := a.net.SetupHost(HostNetwork{
		PrimaryIP: a.id.PrimaryIP, PrimaryIface: a.id.PrimaryIface, VPCCIDRs: a.id.VPCCIDRs,
		ExcludeSNAT: a.cfg.Pool.ExcludeSNATCIDRs, ExternalSNAT: a.cfg.Pool.ExternalSNAT,
	}); err != nil {
		return fmt.Errorf("set up the node's networking: %w", err)
	}
	sock, err := listenUnix(a.cfg.Socket)
	if err != nil {
		return err
	}
	srv, hs := a.newGRPC()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(sock); err != nil {
			errc <- fmt.Errorf("serve %s: %w", a.cfg.Socket, err)
		}
	}()
	var servers []*http.Server
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{a.cfg.IntrospectionAddr, a.introspectionHandler()}, {a.cfg.MetricsAddr, a.metricsHandler()}} {
		if s.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", s.addr)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("listen on %s: %w", s.addr, err)
		}
		hsrv := &http.Server{Handler: s.h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, hsrv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hsrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", s.addr, err)
			}
		}()
	}
	rctx, stopReconciler := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.run(rctx)
	}()
	// Health turns SERVING as soon as the first reconcile has read EC2,
	// and only then is the node's conflist written, so that the node
	// turns Ready only when ADDs can succeed. Gauges follow every change
	// of the pool, and a slow tick besides.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		serving := false
		for {
			a.mu.Lock()
			ready, changed := a.ready, a.changed
			a.mu.Unlock()
			if !serving && ready {
				if err := a.cfg.writeCNIConf(conflist); err != nil {
					// Not serving without it: the node must not turn
					// Ready. Tried again at the next tick.
					a.log.Error("not serving yet", "err", err)
				} else {
					serving = true
					hs.SetServingStatus(nodeapi.HealthService, healthpb.HealthCheckResponse_SERVING)
					hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
					a.log.Info("ready", "instance", a.id.InstanceID, "maxPods", a.limits.MaxPods, "cniConf", a.cfg.CNIConfPath)
				}
			}
			a.updateGauges()
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
			case <-changed:
			}
		}
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.log.Info("stopping: finishing in-flight calls")
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(a.cfg.Pool.AddWait + 5*time.Second):
		srv.Stop()
	}
	for _, s := range servers {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.Shutdown(sctx)
		cancel()
	}
	stopReconciler()
	wg.Wait()
	return runErr
}
