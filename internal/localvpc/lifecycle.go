package localvpc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/mounts"
	"github.com/vpcnet/vpcnet/internal/proc"

	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// Up starts a local VPC in the background and waits until it is ready. A
// VPC of that name that exists with its control plane down is resumed
// (resumed is true), never replaced: everything in its state is kept. If
// cfg asks for something else than it has (cfg's non-zero fields are what
// was asked for), Up refuses and names `restart` and `down`. A new VPC
// gets the configuration written and the control plane started with
// serveArgs (the command line of `vpcnet local serve` for dir).
func Up(ctx context.Context, cfg Config, serveArgs func(dir string) []string) (c *Control, resumed bool, err error) {
	asked := cfg
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, false, err
	}
	if c, err := Find(cfg.Name); err == nil {
		return nil, false, fmt.Errorf("local VPC %q is already up (control plane pid %d, %s); `vpcnet local down --name %s` first", cfg.Name, c.PID, c.Endpoint, cfg.Name)
	}
	dir := StateDir(cfg.Name)
	stored, err := readConfig(dir)
	switch {
	case err == nil:
		if diff := asked.conflicts(stored); len(diff) > 0 {
			return nil, false, fmt.Errorf("local VPC %q exists, with its control plane down, and differs from what up asks for (%s); %s, then `vpcnet local up --name %s` makes a new one",
				cfg.Name, strings.Join(diff, ", "), downHint(cfg.Name), cfg.Name)
		}
		c, err := resume(ctx, cfg.Name, serveArgs)
		return c, err == nil, err
	case !errors.Is(err, fs.ErrNotExist):
		// A configuration that cannot be read is a VPC all the same:
		// replacing it would cut off every task and ENI it holds.
		return nil, false, fmt.Errorf("local VPC %q exists but %v; nothing was changed. Restore %s, then %s",
			cfg.Name, err, filepath.Join(dir, configFile), downHint(cfg.Name))
	case fileExists(filepath.Join(dir, vpc.StateFileName)):
		// The EC2 state is written after the configuration: without
		// one, the configuration was removed, not never written.
		return nil, false, fmt.Errorf("local VPC %q has EC2 state (%s) but no %s; nothing was changed. Restore it, or `vpcnet local down --name %s` removes the VPC with its ENIs",
			cfg.Name, filepath.Join(dir, vpc.StateFileName), configFile, cfg.Name)
	}
	// A state directory with neither configuration nor EC2 state is no VPC:
	// the leftovers of a crashed first start, or of a `down` cut short.
	if err := Down(cfg.Name); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("failed to create the state directory: %w", err)
	}
	if err := writeConfig(dir, cfg); err != nil {
		_ = Down(cfg.Name)
		return nil, false, err
	}
	c, err = start(ctx, cfg.Name, serveArgs(dir))
	if err != nil {
		// A configuration the control plane refused (a subnet EC2 would
		// not create) must not leave a state directory or namespaces.
		_ = Down(cfg.Name)
		return nil, false, err
	}
	return c, false, nil
}

// Restart stops the control plane of a local VPC, if it runs, and starts
// it again on the same state: ENIs, attachments, addresses, tags,
// credentials and faults are all kept, and the datapath is never torn
// down. It is also how a VPC whose control plane died comes back.
func Restart(ctx context.Context, name string, serveArgs func(dir string) []string) (*Control, error) {
	c, err := Find(name)
	if err != nil && !errors.Is(err, ErrDown) {
		return nil, err
	}
	if c != nil {
		if err := stopProcess(c.PID, 10*time.Second); err != nil {
			return nil, err
		}
	}
	return resume(ctx, name, serveArgs)
}

// resume starts the control plane of an existing local VPC whose control
// plane is not running, on its state, where its clients look for it.
func resume(ctx context.Context, name string, serveArgs func(dir string) []string) (*Control, error) {
	dir := StateDir(name)
	if c, _ := Find(name); c != nil {
		if err := keepEndpoint(dir, c); err != nil {
			return nil, err
		}
	}
	return start(ctx, name, serveArgs(dir))
}

// keepEndpoint pins the ports the EC2 API and the Kubernetes API forward
// got at `up` (when they asked for any free one) in the configuration, so
// that a restarted control plane listens where clients set up with `vpcnet
// local env` and the cluster's kubeconfig look for it.
func keepEndpoint(dir string, c *Control) error {
	cfg, err := readConfig(dir)
	if err != nil {
		return err
	}
	pin := func(listen *string, endpoint string) {
		host, port, err := net.SplitHostPort(*listen)
		if err != nil || port != "0" {
			return
		}
		u, err := url.Parse(endpoint)
		if err != nil || u.Port() == "" {
			return
		}
		*listen = net.JoinHostPort(host, u.Port())
	}
	pin(&cfg.Listen, c.Endpoint)
	if c.KubernetesAPI != "" {
		pin(&cfg.KubernetesListen, c.KubernetesAPI)
	}
	return writeConfig(dir, cfg)
}

func start(ctx context.Context, name string, argv []string) (*Control, error) {
	dir := StateDir(name)
	_ = os.Remove(filepath.Join(dir, controlFile))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "VPCNET_LOG_FILE="+filepath.Join(dir, "control-plane.jsonl"))
	if err := proc.StartDetachedWith(cmd, filepath.Join(dir, "control-plane.log"), nil); err != nil {
		return nil, fmt.Errorf("the control plane: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("the control plane exited during start-up (%v): %s", err, lastLines(filepath.Join(dir, "control-plane.log"), 8))
		case <-deadline.C:
			_ = stopProcess(cmd.Process.Pid, 5*time.Second)
			return nil, fmt.Errorf("the control plane did not become ready within 60s: %s", lastLines(filepath.Join(dir, "control-plane.log"), 8))
		case <-ctx.Done():
			_ = stopProcess(cmd.Process.Pid, 5*time.Second)
			return nil, ctx.Err()
		case <-tick.C:
			c, err := Find(name)
			if err == nil && c.PID == cmd.Process.Pid && answers(c.Endpoint) {
				return c, nil
			}
		}
	}
}

func answers(endpoint string) bool {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(endpoint + "/vpcnet/status")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Down stops the control plane of a local VPC and removes everything it
// made: namespaces, links, routes, nftables objects and its state. It
// succeeds when there is nothing to remove.
func Down(name string) error {
	// The name becomes a path that is removed: never one outside
	// BaseStateDir.
	if err := validName(name); err != nil {
		return err
	}
	var errs []error
	// The cluster's nodes first: their pods' addresses go back while
	// vpcnetd and the EC2 API still answer.
	if err := StopCluster(name); err != nil {
		errs = append(errs, fmt.Errorf("failed to stop the cluster: %w", err))
	}
	if c, _ := Find(name); c != nil && proc.Alive(c.PID) {
		if err := stopProcess(c.PID, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := fabric.Destroy(name); err != nil {
		errs = append(errs, fmt.Errorf("failed to remove the datapath: %w", err))
	}
	// The pins of the instances' mount namespaces and the private mount
	// that holds them. A namespace lives on while a process still runs in
	// it; its files are gone with the state directory.
	if err := mounts.UnmountWithin(StateDir(name)); err != nil {
		errs = append(errs, fmt.Errorf("failed to release the instances' file systems: %w", err))
	} else if err := os.RemoveAll(StateDir(name)); err != nil {
		errs = append(errs, fmt.Errorf("failed to remove the state directory: %w", err))
	}
	return errors.Join(errs...)
}

// stopProcess stops our control plane: SIGTERM, then SIGKILL after grace,
// and waits for it to die (until then it holds the state directory's lock,
// and a control plane started at once on that state would fail). It
// refuses to signal a PID that is no longer a vpcnet process.
func stopProcess(pid int, grace time.Duration) error {
	if !proc.Alive(pid) || !proc.RunsBinary(pid, "vpcnet") {
		return nil // gone, or a recycled PID: not ours to stop
	}
	proc.Stop(pid, grace)
	return nil
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
