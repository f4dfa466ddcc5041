package nodeapi

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Dial returns a client connection to vpcnetd's unix socket. The
// connection is made at the first call; onDialErr (if not nil) hears each
// failure to reach the socket, so that a caller can tell "no agent" from
// an agent's refusal.
func Dial(socket string, onDialErr func(error)) (*grpc.ClientConn, error) {
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", socket)
		if err != nil && onDialErr != nil {
			onDialErr(err)
		}
		return c, err
	}
	return grpc.NewClient("passthrough:///vpcnetd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer))
}

// Probe asks the agent at socket whether it serves (grpc.health.v1 for
// HealthService): nil when SERVING, else an error saying what it answered
// or why it could not be asked. It is the DaemonSet's readiness and
// liveness check.
func Probe(ctx context.Context, socket string) error {
	var dialErr atomic.Pointer[error] // set from gRPC's goroutine
	conn, err := Dial(socket, func(err error) { dialErr.Store(&err) })
	if err != nil {
		return fmt.Errorf("set up a client for %s: %w", socket, err)
	}
	defer conn.Close()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: HealthService})
	if err != nil {
		if de := dialErr.Load(); de != nil {
			return fmt.Errorf("nothing answers at %s: %w", socket, *de)
		}
		return fmt.Errorf("health check of vpcnetd at %s: %w", socket, err)
	}
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("the agent at %s is %s", socket, r.GetStatus())
	}
	return nil
}
