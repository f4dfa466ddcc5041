// Package kube runs the Kubernetes control plane of a local VPC's cluster:
// etcd and kube-apiserver, with their own PKI and an admin kubeconfig, in
// a network namespace of the caller's choosing (the local VPC puts the API
// server at an address inside the VPC, as EKS puts its control plane's ENIs
// in the customer's VPC). The binaries come from
// scripts/install-kubernetes.sh's cache; nothing here builds them.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// ControlPlane says where and how the control plane runs.
type ControlPlane struct {
	// Dir holds its state: pki/, etcd/ (data), logs, kubeconfig, pids.
	Dir string
	// BinDir holds etcd and kube-apiserver.
	BinDir string
	// NetNS is the path of the network namespace they run in; empty: the
	// caller's.
	NetNS string
	// Addr is the API server's address in NetNS (its loopback, or an
	// address inside the VPC); Port its port (6443 when 0).
	Addr netip.Addr
	Port int
	// ServiceCIDR is the ClusterIP range.
	ServiceCIDR netip.Prefix
	// Controllers: kube-controller-manager and kube-scheduler run too (a
	// cluster whose pods get scheduled, service accounts made, endpoints
	// kept); without them the API server stands alone, for tests that
	// play the controllers' part.
	Controllers bool
}

// DefaultServiceCIDR is the ClusterIP range of a local cluster: inside
// 10.0.0.0/8 and outside every VPC CIDR the local VPC gives by default.
var DefaultServiceCIDR = netip.MustParsePrefix("10.100.0.0/16")

func (c ControlPlane) port() int {
	if c.Port == 0 {
		return 6443
	}
	return c.Port
}

func (c ControlPlane) pki() PKI { return PKI{Dir: filepath.Join(c.Dir, "pki")} }

// URL is the API server's address.
func (c ControlPlane) URL() string {
	return "https://" + net.JoinHostPort(c.Addr.String(), strconv.Itoa(c.port()))
}

// Kubeconfig is the admin kubeconfig's path.
func (c ControlPlane) Kubeconfig() string { return filepath.Join(c.Dir, "admin.kubeconfig") }

// PKI is the cluster's credentials.
func (c ControlPlane) PKI() PKI { return c.pki() }

// components are the processes of the control plane, in start order.
func (c ControlPlane) components() []string {
	if c.Controllers {
		return []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	}
	return []string{"etcd", "kube-apiserver"}
}

// pidsFile records the running processes (name -> pid and start time), so
// that Stop, in this process or a later one, stops exactly them.
func (c ControlPlane) pidsFile() string { return filepath.Join(c.Dir, "pids.json") }

type pidRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// Start generates the PKI (once) and the kubeconfig, starts etcd and then
// kube-apiserver as daemons (they outlive the caller, as a local VPC's
// control plane does; Stop ends them), and waits until the API server is
// ready or ctx ends. Started again after a Stop, it keeps etcd's data.
func (c ControlPlane) Start(ctx context.Context) error {
	if !c.Addr.IsValid() {
		return errors.New("start the control plane: no API server address")
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = DefaultServiceCIDR
	}
	for _, b := range c.components() {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("start the control plane: %s is not built (scripts/install-kubernetes.sh builds it): %w", b, err)
		}
	}
	if c.running() {
		return c.waitReady(ctx)
	}
	// What a crash or a reboot left of it goes; it all starts again.
	c.Stop()
	pki := c.pki()
	if !pki.Exists() {
		addrs := []netip.Addr{c.Addr, netip.MustParseAddr("127.0.0.1"), c.ServiceCIDR.Addr().Next()}
		if err := pki.Generate(addrs); err != nil {
			return fmt.Errorf("generate the cluster's certificates: %w", err)
		}
	}
	if err := WriteKubeconfig(c.Kubeconfig(), c.URL(), pki, "admin"); err != nil {
		return err
	}
	if c.NetNS != "" {
		// etcd listens on the namespace's loopback.
		n, err := ns.GetNS(c.NetNS)
		if err != nil {
			return fmt.Errorf("open %s: %w", c.NetNS, err)
		}
		err = netops.LoopbackUp(n)
		n.Close()
		if err != nil {
			return fmt.Errorf("set up loopback in %s: %w", c.NetNS, err)
		}
	}
	etcdClient, etcdPeer := "http://127.0.0.1:2379", "http://127.0.0.1:2380"
	pids := map[string]pidRecord{}
	start := func(name string, args ...string) error {
		argv := append([]string{filepath.Join(c.BinDir, name)}, args...)
		if c.NetNS != "" {
			argv = append([]string{"nsenter", "--net=" + c.NetNS, "--"}, argv...)
		}
		pid, err := proc.StartDetached(filepath.Join(c.Dir, name+".log"), argv, os.Environ())
		if err != nil {
			return err
		}
		pids[name] = pidRecord{PID: pid, Start: proc.StartTime(pid)}
		return c.savePIDs(pids)
	}
	if err := start("etcd", "--name=vpcnet", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdClient, "--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=vpcnet="+etcdPeer, "--log-level=warn"); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	if err := start("kube-apiserver",
		"--etcd-servers="+etcdClient,
		"--bind-address="+c.Addr.String(), "--advertise-address="+c.Addr.String(), "--secure-port="+strconv.Itoa(c.port()),
		"--tls-cert-file="+pki.ServerCert(), "--tls-private-key-file="+pki.ServerKey(),
		"--client-ca-file="+pki.CACert(),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+pki.SAPub(), "--service-account-signing-key-file="+pki.SAKey(),
		"--service-cluster-ip-range="+c.ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+pki.Cert("apiserver-kubelet-client"),
		"--kubelet-client-key="+pki.Key("apiserver-kubelet-client"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true"); err != nil {
		c.Stop()
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("%w (logs: %s)", err, c.Dir)
	}
	// The controllers once the API server is ready: its RBAC bootstrap
	// policy, which lets them in, exists only from then on.
	if c.Controllers {
		if err := c.startControllers(start); err != nil {
			c.Stop()
			return err
		}
	}
	return nil
}

// running says whether the recorded processes all still run.
func (c ControlPlane) running() bool {
	pids, err := c.loadPIDs()
	return err == nil && running(pids, c.components())
}

// Stop ends the control plane's processes (those recorded, and only if
// they are still the processes that were started). etcd's data and the
// PKI stay; Remove deletes them.
func (c ControlPlane) Stop() {
	pids, _ := c.loadPIDs()
	for _, name := range slices.Backward(c.components()) {
		if p, ok := pids[name]; ok && proc.Same(p.PID, p.Start) {
			proc.Stop(p.PID, 10*time.Second)
		}
	}
	_ = os.Remove(c.pidsFile())
}

func (c ControlPlane) savePIDs(pids map[string]pidRecord) error { return savePIDs(c.pidsFile(), pids) }

func (c ControlPlane) loadPIDs() (map[string]pidRecord, error) { return loadPIDs(c.pidsFile()) }

func savePIDs(path string, pids map[string]pidRecord) error {
	b, _ := json.Marshal(pids)
	return atomicfile.Write(path, b, 0o600, 0o700)
}

func loadPIDs(path string) (map[string]pidRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pids := map[string]pidRecord{}
	return pids, json.Unmarshal(b, &pids)
}

// running says whether each of names was recorded and still runs.
func running(pids map[string]pidRecord, names []string) bool {
	for _, n := range names {
		p, ok := pids[n]
		if !ok || !proc.Same(p.PID, p.Start) {
			return false
		}
	}
	return true
}

// waitReady polls the API server's /readyz as the admin until it answers
// "ok" or ctx ends; the error carries the last answer.
func (c ControlPlane) waitReady(ctx context.Context) error {
	client, err := c.AdminClient()
	if err != nil {
		return err
	}
	last := errors.New("no answer yet")
	for {
		if err := c.exited(); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, c.URL()+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = fmt.Errorf("/readyz: %s: %s", resp.Status, body)
		} else {
			last = err
		}
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server at %s is not ready: %w (%v)", c.URL(), last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// exited fails when a recorded process has exited: its log says why.
func (c ControlPlane) exited() error {
	pids, err := c.loadPIDs()
	if err != nil {
		return fmt.Errorf("the control plane's processes: %w", err)
	}
	for name, p := range pids {
		if !proc.Same(p.PID, p.Start) {
			return fmt.Errorf("%s exited; see %s", name, filepath.Join(c.Dir, name+".log"))
		}
	}
	return nil
}

// AdminClient is an HTTPS client with the admin's certificate that trusts
// the cluster's CA and connects from inside NetNS.
func (c ControlPlane) AdminClient() (*http.Client, error) {
	pki := c.pki()
	cert, err := tls.LoadX509KeyPair(pki.AdminCert(), pki.AdminKey())
	if err != nil {
		return nil, fmt.Errorf("load the admin certificate: %w", err)
	}
	caPEM, err := os.ReadFile(pki.CACert())
	if err != nil {
		return nil, fmt.Errorf("read the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext:     c.dialContext,
	}
	return &http.Client{Transport: tr}, nil
}

// dialContext connects from inside NetNS: a socket stays in the namespace
// it was created in, so only the dial needs the thread switched.
func (c ControlPlane) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.NetNS == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	var conn net.Conn
	err := ns.WithNetNSPath(c.NetNS, func(ns.NetNS) error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// startControllers issues the controller manager's and the scheduler's
// certificates (once) and starts them. Both run beside the API server and
// reach it at its address; neither elects a leader (there is one of each).
func (c ControlPlane) startControllers(start func(name string, args ...string) error) error {
	pki := c.pki()
	for _, id := range []struct{ name, cn string }{
		{"kube-controller-manager", "system:kube-controller-manager"},
		{"kube-scheduler", "system:kube-scheduler"},
	} {
		if _, err := os.Stat(pki.Cert(id.name)); err != nil {
			if err := pki.Issue(id.name, Subject{CN: id.cn}); err != nil {
				return err
			}
		}
		if err := WriteKubeconfig(filepath.Join(c.Dir, id.name+".kubeconfig"), c.URL(), pki, id.name); err != nil {
			return err
		}
	}
	kc := func(name string) string { return filepath.Join(c.Dir, name+".kubeconfig") }
	if err := start("kube-controller-manager",
		"--kubeconfig="+kc("kube-controller-manager"),
		"--authentication-kubeconfig="+kc("kube-controller-manager"),
		"--authorization-kubeconfig="+kc("kube-controller-manager"),
		"--service-account-private-key-file="+pki.SAKey(),
		"--root-ca-file="+pki.CACert(),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(),
		"--leader-elect=false",
		"--bind-address=127.0.0.1"); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	if err := start("kube-scheduler",
		"--kubeconfig="+kc("kube-scheduler"),
		"--authentication-kubeconfig="+kc("kube-scheduler"),
		"--authorization-kubeconfig="+kc("kube-scheduler"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1"); err != nil {
		return fmt.Errorf("start kube-scheduler: %w", err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for the API server at server, as the
// identity whose certificate the PKI holds under name (certificates
// embedded, so that the file can be copied).
func WriteKubeconfig(path, server string, pki PKI, name string) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err1 := read(pki.CACert())
	crt, err2 := read(pki.Cert(name))
	key, err3 := read(pki.Key(name))
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("read the cluster's certificates: %w", err)
	}
	// JSON is YAML: kubectl reads either.
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "vpcnet",
		"clusters": []any{map[string]any{"name": "vpcnet", "cluster": map[string]any{
			"server": server, "certificate-authority-data": ca}}},
		"users": []any{map[string]any{"name": name, "user": map[string]any{
			"client-certificate-data": crt, "client-key-data": key}}},
		"contexts": []any{map[string]any{"name": "vpcnet", "context": map[string]any{"cluster": "vpcnet", "user": name}}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return atomicfile.Write(path, b, 0o600, 0o700)
}
