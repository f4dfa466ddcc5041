// Package localvpctest starts local VPCs for tests, through the vpcnet
// binary exactly as a user does, and gives tests the clients they need: the
// AWS SDK's EC2 client with the operator's credentials, and commands run on
// an instance with an instance's environment.
package localvpctest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// NamePrefix starts the name of every local VPC a test starts, so that a
// crashed run's leftovers can be found.
const NamePrefix = "vt"

// VPC is a running local VPC of a test.
type VPC struct {
	*localvpc.Control
	Bin string // the vpcnet binary
	t   testing.TB
}

// Up starts a local VPC named "vt" + tag + random hex with `vpcnet local
// up` and extra flags, and takes it down when the test ends.
func Up(t testing.TB, tag string, flags ...string) *VPC {
	t.Helper()
	testenv.Privileged(t)
	bin := testenv.Binary(t, "vpcnet")
	// The task launcher looks for the plugins next to vpcnet.
	for _, p := range []string{"vpc-eni", "vpc-bridge", "vpc-ipam"} {
		testenv.Binary(t, p)
	}
	name := NamePrefix + tag + testenv.RandomHex(3)
	args := append([]string{"local", "up", "--name", name}, flags...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		_ = exec.Command(bin, "local", "down", "--name", name).Run()
		t.Fatalf("vpcnet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "local", "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("vpcnet local down --name %s: %v\n%s", name, err, out)
		}
	})
	c, err := localvpc.Find(name)
	if err != nil {
		t.Fatal(err)
	}
	return &VPC{Control: c, Bin: bin, t: t}
}

// CleanLeftovers takes down local VPCs of crashed test runs whose names
// start with NamePrefix+tag. Call it from TestMain.
func CleanLeftovers(tag string) {
	if os.Geteuid() != 0 {
		return
	}
	entries, _ := os.ReadDir(localvpc.BaseStateDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), NamePrefix+tag) {
			if _, err := localvpc.Find(e.Name()); err != nil {
				_ = localvpc.Down(e.Name())
			}
		}
	}
	// Namespaces of a VPC whose state directory is already gone.
	names, _ := netops.ListNamedNS(NamePrefix + tag)
	seen := map[string]bool{}
	for _, n := range names {
		vpcName, _, _ := strings.Cut(n, "-")
		if !seen[vpcName] {
			seen[vpcName] = true
			if _, err := localvpc.Find(vpcName); err != nil {
				_ = localvpc.Down(vpcName)
			}
		}
	}
}

// EC2 returns an EC2 client of the operator, from the root namespace.
func (v *VPC) EC2() *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       v.Region,
		BaseEndpoint: aws.String(v.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(v.AccessKeyID, v.SecretAccessKey, ""),
		HTTPClient:   cloud.HTTPClientFor(awshttp.NewBuildableClient()),
	})
}

// Vpcnet runs the vpcnet binary with args (plus --local for task commands
// and --name for local commands is up to the caller) and returns its
// combined output, failing the test on error.
func (v *VPC) Vpcnet(args ...string) string {
	v.t.Helper()
	out, err := v.Command(args...).CombinedOutput()
	if err != nil {
		v.t.Fatalf("vpcnet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command returns an unstarted vpcnet command.
func (v *VPC) Command(args ...string) *exec.Cmd {
	return exec.Command(v.Bin, args...)
}

// OnInstance runs a command on instance n (1-based), in its namespaces and
// with an instance's environment, as `vpcnet local exec` does, and returns its output and
// error without failing the test.
func (v *VPC) OnInstance(n int, name string, args ...string) (string, error) {
	in := v.Instances[n-1]
	cmd := exec.Command(name, args...)
	cmd.Env = v.InstanceEnv(os.Environ(), in.ID)
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}()
	if err := v.StartOnInstance(in.ID, cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return buf.String(), err
}

// MustOnInstance is OnInstance failing the test on error.
func (v *VPC) MustOnInstance(n int, name string, args ...string) string {
	v.t.Helper()
	out, err := v.OnInstance(n, name, args...)
	if err != nil {
		v.t.Fatalf("on instance %d: %s %s: %v\n%s", n, name, strings.Join(args, " "), err, out)
	}
	return out
}
