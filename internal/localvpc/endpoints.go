package localvpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// An endpoint ENI is how a service of the local VPC itself gets an address
// in a subnet, as EKS puts its control plane's ENIs in the customer's
// subnets: an ENI created through the EC2 API (so its address is taken
// from the subnet like any other, never handed out again, and
// DescribeNetworkInterfaces shows it), left unattached and tagged
// EndpointTag=SERVICE. The fabric owns its primary address, on which the
// service listens inside the fabric namespace; instances reach it through
// their gateway with no NAT in between, whatever their security groups
// say (as for instance metadata).
const (
	EndpointTag = "vpcnet:endpoint"
	// KubeAPIService is the cluster's API server (`up --kubernetes`).
	KubeAPIService = "kube-apiserver"
	// KubeAPIPort is the API server's port on its endpoint ENI.
	KubeAPIPort = 6443
)

// endpointAddrs are the primary addresses of the unattached endpoint ENIs.
func endpointAddrs(st vpc.State) []netip.Addr {
	var out []netip.Addr
	for _, n := range vpc.SortedValues(st.NetworkInterfaces) {
		if n.Attachment == nil && n.Tags[EndpointTag] != "" && len(n.PrivateIPs) > 0 {
			out = append(out, n.PrimaryIP())
		}
	}
	return out
}

// endpointAddr is the address of the service's endpoint ENI.
func endpointAddr(st vpc.State, service string) (netip.Addr, bool) {
	for _, n := range vpc.SortedValues(st.NetworkInterfaces) {
		if n.Attachment == nil && n.Tags[EndpointTag] == service && len(n.PrivateIPs) > 0 {
			return n.PrimaryIP(), true
		}
	}
	return netip.Addr{}, false
}

// forwardKubeAPI accepts connections in the root namespace (for kubectl on
// the machine) and joins each to the API server on its endpoint ENI inside
// the fabric, byte for byte (TLS passes through: the server certificate
// names 127.0.0.1 too). Before the cluster exists a connection is closed
// at once.
func (s *Server) forwardKubeAPI(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("Kubernetes API forward stopped", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if err := s.joinKubeAPI(ctx, c); err != nil {
				s.log.Debug("Kubernetes API forward", "from", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

func (s *Server) joinKubeAPI(ctx context.Context, c net.Conn) error {
	addr, ok := endpointAddr(s.model.Snapshot(), KubeAPIService)
	if !ok {
		return fmt.Errorf("no %s endpoint ENI (the cluster is not up)", KubeAPIService)
	}
	up, err := fabric.Dial(ctx, s.cfg.Name, "tcp", net.JoinHostPort(addr.String(), strconv.Itoa(KubeAPIPort)))
	if err != nil {
		return err
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
	return nil
}
