package localvpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/imds"
	"github.com/vpcnet/vpcnet/internal/localvpc/sigv4"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// Server is a running control plane: the model, the EC2 API in the root
// namespace and inside the VPC, instance metadata inside the VPC, and the
// loop that keeps the datapath equal to the model.
type Server struct {
	cfg      Config
	dir      string
	log      *slog.Logger
	model    *vpc.Model
	api      *ec2api.Handler
	metadata *laggedDirectory
	ready    chan struct{}
	// replan wakes the reconcile loop when the attach delay changes: an
	// attachment it holds back may be due now.
	replan chan struct{}

	// kubeAPI is where the Kubernetes API is forwarded to (Kubernetes).
	kubeAPI string

	mu      sync.Mutex
	faults  ec2api.Faults
	control *Control
}

// Serve runs the control plane of the local VPC whose state is in dir until
// ctx ends. A new state directory is bootstrapped from its config.json; an
// existing one is resumed, with everything in it (ENIs, attachments,
// addresses, tags, credentials). The datapath stays when Serve returns, so
// a restarted control plane takes over a VPC whose traffic never stopped.
func Serve(ctx context.Context, dir string, log *slog.Logger) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	cfg, err := readConfig(dir)
	if err != nil {
		return err
	}
	model, err := vpc.Open(dir, vpc.WithRegion(cfg.Region), vpc.WithLogger(log))
	if err != nil {
		return fmt.Errorf("failed to open the local VPC state in %s: %w", dir, err)
	}
	defer model.Close()
	// The faults set at run time, if any, else those `up` was given.
	if f, ok, err := readFaults(dir); err != nil {
		return err
	} else if ok {
		cfg.Faults = f
	}
	s := &Server{cfg: cfg, dir: dir, log: log, model: model, faults: cfg.Faults, ready: make(chan struct{}), replan: make(chan struct{}, 1)}
	if err := s.bootstrap(); err != nil {
		return err
	}
	s.metadata = newLaggedDirectory(model, time.Duration(cfg.Faults.MetadataLag))
	s.api, err = ec2api.New(model, ec2api.Config{
		Auth:     ec2api.AuthenticatorFunc(s.authenticate),
		Throttle: cfg.Throttle,
		Faults:   cfg.Faults,
		Logger:   log,
	})
	if err != nil {
		return err
	}

	// The datapath first: the fabric must exist before anything listens
	// inside it.
	changes, cancelSub := model.Subscribe()
	defer cancelSub()
	first := s.spec(time.Now())
	if err := fabric.Apply(ctx, first.spec); err != nil {
		return fmt.Errorf("failed to build the datapath: %w", err)
	}
	for _, in := range first.spec.Instances {
		if err := s.prepareInstance(in.ID); err != nil {
			return err
		}
	}
	watcher, err := fabric.NewWatcher(cfg.Name)
	if err != nil {
		return err
	}
	defer watcher.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	lost := make(chan string, 64)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := watcher.Run(ctx, func(id string) {
			select {
			case lost <- id:
			default:
			}
		}); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("datapath watcher: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		s.reconcileLoop(ctx, changes, lost)
	}()

	servers, err := s.listen(ctx, errc)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	if err := s.publish(servers[0].addr); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	close(s.ready)
	log.Info("local VPC control plane ready", "name", cfg.Name, "endpoint", s.control.Endpoint)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	for _, srv := range servers {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		c()
	}
	wg.Wait()
	return err
}

// bootstrap creates the VPC, its subnets and instances in a new state.
func (s *Server) bootstrap() error {
	st := s.model.Snapshot()
	if len(st.VPCs) > 0 {
		return nil
	}
	v, err := s.model.CreateVPC(vpc.VPCSpec{CIDR: s.cfg.VPCCIDR, Tags: vpc.Tags{"Name": s.cfg.Name}})
	if err != nil {
		return fmt.Errorf("failed to create the VPC: %w", err)
	}
	var subnets []vpc.Subnet
	for i, sc := range s.cfg.Subnets {
		sn, err := s.model.CreateSubnet(vpc.SubnetSpec{VPCID: v.ID, CIDR: sc.CIDR, AvailabilityZone: sc.Zone,
			Tags: vpc.Tags{"Name": fmt.Sprintf("%s-%d", s.cfg.Name, i+1)}})
		if err != nil {
			return fmt.Errorf("failed to create subnet %s: %w", sc.CIDR, err)
		}
		subnets = append(subnets, sn)
	}
	for i := 0; i < s.cfg.Instances; i++ {
		_, err := s.model.RunInstance(vpc.InstanceSpec{
			Type:     s.cfg.InstanceType,
			SubnetID: subnets[i%len(subnets)].ID,
			RoleName: InstanceRole,
			ImageID:  "ami-0vpcnet0local0000",
			Tags:     vpc.Tags{"Name": fmt.Sprintf("%s-%d", s.cfg.Name, i+1)},
		})
		if err != nil {
			return fmt.Errorf("failed to launch instance %d: %w", i+1, err)
		}
	}
	return nil
}

// prepareInstance gives an instance what the fabric does not: its mount
// namespace, and for a Kubernetes node the sysctls of an EKS AMI. Both are
// kept across restarts, so this changes nothing on a resumed VPC.
func (s *Server) prepareInstance(id string) error {
	if err := ensureInstanceMounts(s.dir, id); err != nil {
		return err
	}
	if s.cfg.KubernetesNode {
		if err := setNodeSysctls(netops.NamedNSPath(fabric.InstanceNamespace(s.cfg.Name, id))); err != nil {
			return fmt.Errorf("failed to configure instance %s as a Kubernetes node: %w", id, err)
		}
	}
	return nil
}

// authenticate checks a request's SigV4 signature against the credentials
// the model issued.
func (s *Server) authenticate(r *http.Request, body []byte) (string, error) {
	id, verr := sigv4.VerifyInRegion(r, body, time.Now(), s.cfg.Region, func(key string) (sigv4.Credentials, bool) {
		k, ok := s.model.ResolveAccessKey(key)
		if !ok || k.Expired {
			return sigv4.Credentials{}, false
		}
		return sigv4.Credentials{AccessKeyID: key, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, true
	})
	if verr != nil {
		s.log.Info("request refused", "code", verr.Code, "detail", verr.Detail, "remote", r.RemoteAddr)
		return "", &vpc.Error{Code: verr.Code, Message: verr.Message}
	}
	k, _ := s.model.ResolveAccessKey(id)
	return k.Principal, nil
}

type server struct {
	*http.Server
	addr string
}

// listen starts the EC2 API (and the admin API) on the root namespace's
// loopback, and the metadata service and the EC2 API inside the VPC.
func (s *Server) listen(ctx context.Context, errc chan<- error) ([]server, error) {
	root := http.NewServeMux()
	root.Handle("/", s.api)
	root.HandleFunc("/vpcnet/status", s.handleStatus)
	root.HandleFunc("/vpcnet/faults", s.handleFaults)
	meta := imds.New(s.metadata, imds.Options{Logger: s.log})

	type listener struct {
		ln      net.Listener
		handler http.Handler
	}
	var lns []listener
	rootLn, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", s.cfg.Listen, err)
	}
	lns = append(lns, listener{rootLn, root})
	for _, l := range []struct {
		addr    netip.Addr
		handler http.Handler
	}{
		{IMDSv4, meta},
		{IMDSv6, meta},
		{VPCEndpointAddr(s.cfg), s.api},
	} {
		ln, err := fabric.Listen(s.cfg.Name, "tcp", net.JoinHostPort(l.addr.String(), "80"))
		if err != nil {
			for _, x := range lns {
				x.ln.Close()
			}
			return nil, fmt.Errorf("failed to listen on %s inside the VPC: %w", l.addr, err)
		}
		lns = append(lns, listener{ln, l.handler})
	}
	if s.cfg.Kubernetes {
		ln, err := net.Listen("tcp", s.cfg.KubernetesListen)
		if err != nil {
			for _, x := range lns {
				x.ln.Close()
			}
			return nil, fmt.Errorf("failed to listen on %s for the Kubernetes API: %w", s.cfg.KubernetesListen, err)
		}
		s.kubeAPI = ln.Addr().String()
		go s.forwardKubeAPI(ctx, ln)
	}
	var out []server
	for _, l := range lns {
		srv := &http.Server{Handler: l.handler, ReadHeaderTimeout: 10 * time.Second,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving on %s: %w", ln.Addr(), err)
			}
		}(l.ln)
		out = append(out, server{srv, l.ln.Addr().String()})
	}
	return out, nil
}

// publish writes control.json, which clients (vpcnet local env/exec, the
// task launcher, tests) read to find this control plane.
func (s *Server) publish(rootAddr string) error {
	st := s.model.Snapshot()
	root := s.model.RootCredentials()
	c := &Control{
		Name: s.cfg.Name, StateDir: s.dir, PID: os.Getpid(), Started: time.Now().UTC(),
		Endpoint:        "http://" + rootAddr,
		VPCEndpoint:     "http://" + VPCEndpointAddr(s.cfg).String(),
		Region:          s.cfg.Region,
		AccessKeyID:     root.AccessKeyID,
		SecretAccessKey: root.SecretAccessKey,
	}
	for _, v := range st.VPCs {
		c.VPCID = v.ID
	}
	if s.kubeAPI != "" {
		c.KubernetesAPI = "https://" + s.kubeAPI
		c.KubernetesKubeconfig = filepath.Join(s.dir, ClusterDir, "kubeconfig")
	}
	if s.cfg.ExternalHost {
		c.ExternalHost = ExternalHostAddr.String()
		c.ExternalNamespace = fabric.ExternalNamespace(s.cfg.Name)
	}
	for _, g := range st.SecurityGroups {
		if g.Name == "default" {
			c.DefaultGroup = g.ID
		}
	}
	for _, sc := range s.cfg.Subnets {
		for _, sn := range st.Subnets {
			if sn.CIDR == sc.CIDR {
				c.Subnets = append(c.Subnets, SubnetInfo{ID: sn.ID, CIDR: sn.CIDR.String(), Zone: sn.AvailabilityZone})
			}
		}
	}
	for _, in := range instancesInOrder(st) {
		info := InstanceInfo{ID: in.ID, Type: in.Type, SubnetID: in.SubnetID, Zone: in.AvailabilityZone,
			Namespace:      fabric.InstanceNamespace(s.cfg.Name, in.ID),
			MountNamespace: MountNamespacePath(s.dir, in.ID),
			KubernetesNode: s.cfg.KubernetesNode}
		if eni, ok := st.NetworkInterfaces[in.PrimaryENIID]; ok {
			info.PrivateIP = eni.PrimaryIP().String()
		}
		c.Instances = append(c.Instances, info)
	}
	s.mu.Lock()
	s.control = c
	s.mu.Unlock()
	return c.write()
}

// instancesInOrder lists running instances in launch order (their IDs are
// random, their launch counter is not).
func instancesInOrder(st vpc.State) []*vpc.Instance {
	var out []*vpc.Instance
	for _, in := range st.Instances {
		if in.State == "running" {
			out = append(out, in)
		}
	}
	sortInstances(out)
	return out
}

// Status is what GET /vpcnet/status returns.
type Status struct {
	Control
	NetworkInterfaces int           `json:"networkInterfaces"`
	Attached          int           `json:"attached"`
	SecurityGroups    int           `json:"securityGroups"`
	Faults            ec2api.Faults `json:"faults"`
	Revision          uint64        `json:"revision"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := s.model.Snapshot()
	s.mu.Lock()
	if s.control == nil { // listening, not yet published
		s.mu.Unlock()
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	out := Status{Control: *s.control, Faults: s.faults, Revision: st.Revision, SecurityGroups: len(st.SecurityGroups)}
	s.mu.Unlock()
	out.SecretAccessKey = ""
	for _, n := range st.NetworkInterfaces {
		out.NetworkInterfaces++
		if n.Attachment != nil && n.Attachment.Status == vpc.AttachmentAttached {
			out.Attached++
		}
	}
	writeJSON(w, out)
}

// handleFaults reads (GET) or replaces (PUT) the fault configuration.
func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPut, http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "failed to read the fault configuration: "+err.Error(), http.StatusBadRequest)
			return
		}
		f, err := ec2api.ParseFaults(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.api.SetFaults(f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Kept in the state directory before the reply, so a restarted
		// or crashed control plane comes back with the same faults.
		if err := writeFaults(s.dir, f); err != nil {
			_ = s.api.SetFaults(s.faultsNow())
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		s.faults = f
		s.mu.Unlock()
		s.metadata.setLag(time.Duration(f.MetadataLag))
		select {
		case s.replan <- struct{}{}:
		default:
		}
		s.log.Info("faults changed", "faults", f)
	default:
		http.Error(w, "GET or PUT", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	writeJSON(w, f)
}

// faultsFile holds the faults set at run time (`vpcnet local faults`).
const faultsFile = "faults.json"

func writeFaults(dir string, f ec2api.Faults) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, faultsFile), data, 0o644); err != nil {
		return fmt.Errorf("failed to keep the fault configuration: %w", err)
	}
	return nil
}

// readFaults returns the faults set at run time; ok is false when none
// were.
func readFaults(dir string) (f ec2api.Faults, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, faultsFile))
	if errors.Is(err, os.ErrNotExist) {
		return ec2api.Faults{}, false, nil
	}
	if err != nil {
		return ec2api.Faults{}, false, fmt.Errorf("failed to read the fault configuration: %w", err)
	}
	f, err = ec2api.ParseFaults(data)
	if err != nil {
		return ec2api.Faults{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, faultsFile), err)
	}
	return f, true, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// faultsNow returns the current fault configuration.
func (s *Server) faultsNow() ec2api.Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}
