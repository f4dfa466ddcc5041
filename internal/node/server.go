package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// api serves nodeapi.CNIBackend for the agent.
type api struct {
	nodeapi.UnimplementedCNIBackendServer
	a *Agent
}

func (s *api) AddNetwork(ctx context.Context, req *nodeapi.AddNetworkRequest) (*nodeapi.AddNetworkReply, error) {
	start := time.Now()
	res, err := s.a.Add(ctx, req)
	s.a.observe("add", start, err)
	if err != nil {
		if errors.Is(err, ErrExhausted) {
			s.a.toKube(func(ctx context.Context, k *kube) { k.warn(ctx, "NoPodAddress", err.Error()) })
		}
		return nil, grpcError(err)
	}
	if s.a.cfg.Kube.AnnotatePodIP && req.GetPodName() != "" {
		ns, name, ip := req.GetPodNamespace(), req.GetPodName(), res.Assignment.Address.String()
		s.a.toKube(func(ctx context.Context, k *kube) {
			if err := k.annotatePod(ctx, ns, name, ip); err != nil {
				s.a.log.Warn("ANNOTATE_POD_IP", "err", err)
			}
		})
	}
	return s.a.reply(res), nil
}

func (s *api) DelNetwork(ctx context.Context, req *nodeapi.DelNetworkRequest) (*nodeapi.DelNetworkReply, error) {
	start := time.Now()
	as, found, err := s.a.Del(ctx, req)
	s.a.observe("del", start, err)
	if err != nil {
		return nil, grpcError(err)
	}
	out := &nodeapi.DelNetworkReply{Found: found}
	if found {
		out.Ipv4Address = as.Address.String()
		s.a.mu.Lock()
		if e := s.a.enis[as.ENI]; e != nil {
			out.RouteTable = int32(e.RouteTable())
		}
		s.a.mu.Unlock()
	}
	return out, nil
}

func (s *api) CheckNetwork(ctx context.Context, req *nodeapi.CheckNetworkRequest) (*nodeapi.AddNetworkReply, error) {
	start := time.Now()
	res, found, err := s.a.Check(ctx, KeyOf(req.GetAttachment()))
	s.a.observe("check", start, err)
	if err != nil {
		return nil, grpcError(err)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "attachment %s holds no address", KeyOf(req.GetAttachment()))
	}
	return s.a.reply(res), nil
}

func (s *api) GarbageCollect(ctx context.Context, req *nodeapi.GarbageCollectRequest) (*nodeapi.GarbageCollectReply, error) {
	start := time.Now()
	if req.GetNetwork() == "" {
		return nil, status.Error(codes.InvalidArgument, "network is empty")
	}
	released, err := s.a.GC(ctx, req.GetNetwork(), req.GetValid())
	s.a.observe("gc", start, err)
	if err != nil {
		return nil, grpcError(err)
	}
	out := &nodeapi.GarbageCollectReply{}
	for _, r := range released {
		out.Released = append(out.Released, r.String())
	}
	return out, nil
}

func (s *api) Status(context.Context, *nodeapi.StatusRequest) (*nodeapi.StatusReply, error) {
	ready, reason, free, assigned := s.a.Status()
	return &nodeapi.StatusReply{Ready: ready, Reason: reason, Free: int32(free), Assigned: int32(assigned),
		MaxPods: int32(s.a.limits.MaxPods)}, nil
}

// reply is the API form of an assignment.
func (a *Agent) reply(res AddResult) *nodeapi.AddNetworkReply {
	out := &nodeapi.AddNetworkReply{
		Ipv4Address:  res.Address.String(),
		EniId:        res.ENI.ID,
		DeviceIndex:  int32(res.ENI.DeviceIndex),
		RouteTable:   int32(res.ENI.RouteTable()),
		ExternalSnat: a.cfg.Pool.ExternalSNAT,
		Mtu:          int32(a.cfg.Pool.MTU),
	}
	for _, c := range a.id.VPCCIDRs {
		out.VpcCidrs = append(out.VpcCidrs, c.String())
	}
	return out
}

func (a *Agent) observe(verb string, start time.Time, err error) {
	a.m.cniLatency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = "error"
		a.log.Warn("CNI backend call failed", "verb", verb, "err", err)
	}
	a.m.cniRequests.WithLabelValues(verb, result).Inc()
}

// grpcError maps the agent's errors to the statuses vpc-pod turns into CNI
// codes (see nodeapi.proto).
func grpcError(err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrExhausted):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// listenUnix listens on a unix socket at path, replacing a stale socket
// file of a previous run (the store's lock proves no other agent runs).
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the socket directory %s: %w", filepath.Dir(path), err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restrict %s to root: %w", path, err)
	}
	return l, nil
}

// newGRPC builds the gRPC server with the CNI backend and health services.
func (a *Agent) newGRPC() (*grpc.Server, *health.Server) {
	srv := grpc.NewServer()
	nodeapi.RegisterCNIBackendServer(srv, &api{a: a})
	hs := health.NewServer()
	hs.SetServingStatus(nodeapi.HealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	return srv, hs
}
