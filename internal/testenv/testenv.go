// Package testenv is the harness shared by vpcnet's tests: the rule for
// skipping (never silently in CI), named namespaces that clean up after
// themselves and after crashed runs, and the built binaries that tests run
// as separate processes.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// EnvNoSkip, when "1", turns every skip of a test that needs privileges or
// tools into a failure. CI sets it: there, a skipped test is a missed test.
const EnvNoSkip = "VPCNET_TEST_NO_SKIP"

// EnvBinDir points at a directory holding built vpcnet binaries (make test
// sets it to bin/). Without it, tests build them once into a temp dir.
const EnvBinDir = "VPCNET_BIN_DIR"

// Skip skips the test with reason, or fails it when EnvNoSkip is set.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(EnvNoSkip) == "1" {
		t.Fatalf("cannot run (and %s=1 forbids skipping): %s", EnvNoSkip, reason)
	}
	t.Skip(reason)
}

// Privileged skips (or fails, see EnvNoSkip) unless the test can create
// network namespaces: it needs root.
func Privileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root to create network namespaces and links")
	}
}

// Tool returns the path of an external program the test needs, skipping
// (or failing) when it is not installed. `make test` installs them all.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, fmt.Sprintf("%s is not installed (make test-deps installs it)", name))
	}
	return p
}

// NSPrefix is the start of every namespace a test creates, so leftovers of
// a crashed run can be found by name.
const NSPrefix = "vpct-"

// NewNS creates a named network namespace "vpct-<tag>-<random>" and
// deletes it when the test ends, pass or fail. tag should name the test
// package so that packages running in parallel never clean each other's.
func NewNS(t testing.TB, tag string) ns.NetNS {
	t.Helper()
	Privileged(t)
	name := NSPrefix + tag + "-" + randomHex(4)
	n, err := netops.CreateNamedNS(name)
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := netops.DeleteNamedNS(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return n
}

// NSName returns the name of a namespace created by NewNS.
func NSName(n ns.NetNS) string { return filepath.Base(n.Path()) }

// CleanLeftovers deletes namespaces that an earlier, crashed run of the
// tests tagged tag left behind. Call it from TestMain.
func CleanLeftovers(tag string) {
	if os.Geteuid() != 0 {
		return
	}
	names, _ := netops.ListNamedNS(NSPrefix + tag + "-")
	for _, n := range names {
		_ = netops.DeleteNamedNS(n)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// RandomHex returns 2n random hex characters, for unique names in tests.
func RandomHex(n int) string { return randomHex(n) }

var (
	buildMu   sync.Mutex
	buildDir  string
	buildErrs = map[string]error{}
	built     = map[string]bool{}
)

// Binary returns the path of the named vpcnet binary (vpc-eni, vpc-bridge,
// vpc-ipam, vpcnet, ...): from EnvBinDir when set (make test sets it to
// bin/), else built from ./cmd/<name> into a temp dir, once per test process.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if d := os.Getenv(EnvBinDir); d != "" {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("binary %s not found in %s=%s (run make build): %v", name, EnvBinDir, d, err)
		}
		return p
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if !built[name] {
		buildErrs[name] = build(name)
		built[name] = true
	}
	if err := buildErrs[name]; err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	return filepath.Join(buildDir, name)
}

// BinDir returns a directory holding the named binaries, for CNI_PATH.
func BinDir(t testing.TB, names ...string) string {
	t.Helper()
	dir := ""
	for _, n := range names {
		dir = filepath.Dir(Binary(t, n))
	}
	if dir == "" {
		if d := os.Getenv(EnvBinDir); d != "" {
			return d
		}
		t.Fatal("BinDir needs at least one binary name")
	}
	return dir
}

func build(name string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	if buildDir == "" {
		// One directory per test process, named by its PID so that the
		// next process removes those of processes that are gone.
		removeStaleBuilds()
		buildDir = filepath.Join(os.TempDir(), fmt.Sprintf("vpcnet-bin-%d", os.Getpid()))
		if err := os.MkdirAll(buildDir, 0o755); err != nil {
			return err
		}
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, name), "./cmd/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return nil
}

// removeStaleBuilds deletes the binary directories of test processes that
// have exited.
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "vpcnet-bin-*"))
	for _, d := range dirs {
		var pid int
		_, err := fmt.Sscanf(filepath.Base(d), "vpcnet-bin-%d", &pid)
		if err != nil || pid <= 0 || pid > 1<<22 {
			// Random names of an older layout: no owner to ask, so only
			// remove them once nothing can still be using them.
			if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		// Signal 0, not proc.Alive: proc's own tests use this package.
		if syscall.Kill(pid, 0) != nil {
			os.RemoveAll(d)
		}
	}
}

// ModuleRoot returns the directory of vpcnet's go.mod.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the source tree")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", file)
		}
		dir = parent
	}
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
