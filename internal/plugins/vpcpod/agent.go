package vpcpod

import (
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// agentTimeout bounds the calls other than AddNetwork: they never wait for
// the pool.
const agentTimeout = 10 * time.Second

// agent is a connection to vpcnetd on its unix socket. The connection is
// made by the first call; a failure to connect is remembered so that the
// error can say the socket, not the agent, is the problem.
type agent struct {
	socket string
	conn   *grpc.ClientConn
	nodeapi.CNIBackendClient

	mu      sync.Mutex
	dialErr error
}

func newAgent(socket string) (*agent, error) {
	a := &agent{socket: socket}
	conn, err := nodeapi.Dial(socket, func(err error) {
		a.mu.Lock()
		a.dialErr = err
		a.mu.Unlock()
	})
	if err != nil {
		return nil, cni.Errorf(cni.CodeInternal, "cannot set up a client for vpcnetd at %s: %v", socket, err)
	}
	a.conn = conn
	a.CNIBackendClient = nodeapi.NewCNIBackendClient(conn)
	return a, nil
}

func (a *agent) close() { _ = a.conn.Close() }

// failure turns the error of call into a CNI error (see cniError), telling
// an unreachable socket from an agent that answered.
func (a *agent) failure(call string, err error) *types.Error {
	a.mu.Lock()
	dialErr := a.dialErr
	a.mu.Unlock()
	return cniError(call, a.socket, dialErr, err)
}

// cniError maps a failed call to vpcnetd to the CNI code the contract in
// nodeapi.proto gives it:
//
//	cannot connect to the socket      -> 11, naming the socket
//	INVALID_ARGUMENT                  -> 7
//	RESOURCE_EXHAUSTED, UNAVAILABLE,
//	DEADLINE_EXCEEDED                 -> 11
//	NOT_FOUND                         -> 999 (only CheckNetwork returns it)
//	anything else                     -> 999 with the agent's message
func cniError(call, socket string, dialErr, err error) *types.Error {
	st, _ := status.FromError(err)
	if dialErr != nil && (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) {
		return cni.Errorf(cni.CodeTryAgainLater, "cannot reach vpcnetd at %s (%s): %v; is vpcnetd running on this node?", socket, call, dialErr)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return cni.Errorf(cni.CodeInvalidConfig, "vpcnetd refused %s: %s", call, st.Message())
	case codes.ResourceExhausted:
		return cni.Errorf(cni.CodeTryAgainLater, "vpcnetd has no address to give (%s): %s", call, st.Message())
	case codes.Unavailable:
		return cni.Errorf(cni.CodeTryAgainLater, "vpcnetd at %s is not available (%s): %s", socket, call, st.Message())
	case codes.DeadlineExceeded:
		return cni.Errorf(cni.CodeTryAgainLater, "vpcnetd did not answer %s in time: %s", call, st.Message())
	case codes.NotFound:
		return cni.Errorf(cni.CodeInternal, "vpcnetd holds no address for this attachment (%s): %s", call, st.Message())
	}
	return cni.Errorf(cni.CodeInternal, "vpcnetd failed %s: %s: %s", call, st.Code(), st.Message())
}

// unreachable reports whether err, the error of the last call, means
// vpcnetd could not be reached or did not answer (no socket, nobody
// listening, starting or stopping, hung), as opposed to an answer that
// refused the call: DEL then still cleans the node and succeeds.
func (a *agent) unreachable(err error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	code := status.Code(err)
	return a.dialErr != nil || code == codes.Unavailable || code == codes.DeadlineExceeded
}
