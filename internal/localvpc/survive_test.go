package localvpc_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// faultsOf returns the faults in force, from `vpcnet local faults`.
func faultsOf(t *testing.T, v *localvpctest.VPC) string {
	t.Helper()
	var f ec2api.Faults
	if err := json.Unmarshal([]byte(v.Vpcnet("local", "faults", "--name", v.Name)), &f); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// TestVPCSurvivesItsOperator: faults set at run time survive a restart and
// a crash; a fault document with a key nobody knows is refused and changes
// nothing; with the control plane killed every command names the restart;
// `up` refuses to replace the VPC with another and otherwise resumes it,
// with its instances, ENIs and faults.
func TestVPCSurvivesItsOperator(t *testing.T) {
	v := up(t, tagSurvive)
	const lag = `{"metadataLag":"1s"}`
	setFaults(t, v, lag)
	for _, doc := range []string{`{"metadatalag":"2s"}`, `{"actions":{"*":{"latncy":"1s"}}}`, `{"actions":{"AttachNetworkInterfac":{"latency":"1s"}}}`} {
		out, err := v.Command("local", "faults", "--name", v.Name, doc).CombinedOutput()
		if err == nil {
			t.Errorf("local faults %s succeeded", doc)
		}
		var word string
		for _, w := range []string{"metadatalag", "latncy", "AttachNetworkInterfac"} {
			if strings.Contains(doc, w) {
				word = w
			}
		}
		if !strings.Contains(string(out), `"`+word+`"`) {
			t.Errorf("local faults %s: %q, want the unknown key %q named", doc, out, word)
		}
	}
	want := faultsOf(t, v)
	if !strings.Contains(want, `"metadataLag":"1s"`) {
		t.Fatalf("faults after refused changes: %s, want %s kept", want, lag)
	}
	v.Vpcnet("local", "restart", "--name", v.Name)
	if got := faultsOf(t, v); got != want {
		t.Errorf("faults after a restart: %s, want %s", got, want)
	}

	eni, err := v.EC2().CreateNetworkInterface(t.Context(), &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(v.Subnets[0].ID)})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := localvpc.Find(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(ctl.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, "the killed control plane is dead", converge, func() bool { return !proc.Alive(ctl.PID) })

	restart := "vpcnet local restart --name " + v.Name
	for _, args := range [][]string{
		{"local", "status", "--name", v.Name},
		{"local", "env", "--name", v.Name},
		{"local", "faults", "--name", v.Name},
		{"local", "exec", "--name", v.Name, "1", "--", "true"},
		{"task", "run", "--local", v.Name, "--instance", "1", "--subnet", v.Subnets[0].ID, "--", "true"},
		{"task", "run", "--local", v.Name, "--instance", v.Instances[0].ID, "--subnet", v.Subnets[0].ID, "--", "true"},
		{"task", "run", "--instance", v.Instances[0].ID, "--subnet", v.Subnets[0].ID, "--", "true"},
		{"task", "gc", "--local", v.Name},
		{"task", "gc", "--local", v.Name, "--instance", "1"},
	} {
		out, err := v.Command(args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), restart) {
			t.Errorf("vpcnet %s with the control plane killed: %v %q, want a message naming `%s`", strings.Join(args, " "), err, out, restart)
		}
	}

	namespaces := namespacesOf(t, v.Name)
	out, err := v.Command("local", "up", "--name", v.Name, "--instances", "3").CombinedOutput()
	if err == nil || !strings.Contains(string(out), restart) || !strings.Contains(string(out), "vpcnet local down --name "+v.Name) || !strings.Contains(string(out), "--instances 3") {
		t.Errorf("up with other flags on a VPC that is down: %v %q, want a refusal naming --instances 3, restart and down", err, out)
	}
	if pids := controlPlanes(t, v.Name); len(pids) != 0 || !slices.Equal(namespacesOf(t, v.Name), namespaces) {
		t.Fatalf("a refused up changed the VPC: control planes %v, namespaces %v (were %v)", pids, namespacesOf(t, v.Name), namespaces)
	}

	// ls keeps to this VPC's instances, and says its control plane is down.
	out, err = v.Command("task", "ls", "--local", v.Name).CombinedOutput()
	if err != nil || !strings.Contains(string(out), restart) {
		t.Errorf("task ls --local %s with the control plane killed: %v %q, want a list and a warning naming `%s`", v.Name, err, out, restart)
	}

	// A configuration that cannot be read, or that is gone while the EC2
	// state is there, is still a VPC: up refuses and changes nothing.
	config := filepath.Join(localvpc.StateDir(v.Name), "config.json")
	saved, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(config, saved, 0o600) })
	for _, c := range []struct {
		what  string
		spoil func() error
		want  []string
	}{
		{"a truncated config.json", func() error { return os.WriteFile(config, saved[:len(saved)/2], 0o600) }, []string{"Restore " + config, restart, "vpcnet local down --name " + v.Name}},
		{"no config.json beside the EC2 state", func() error { return os.Remove(config) }, []string{"no config.json", "vpcnet local down --name " + v.Name}},
	} {
		if err := c.spoil(); err != nil {
			t.Fatal(err)
		}
		out, err := v.Command("local", "up", "--name", v.Name).CombinedOutput()
		for _, w := range c.want {
			if err == nil || !strings.Contains(string(out), w) {
				t.Errorf("up with %s: %v %q, want a refusal naming %q", c.what, err, out, w)
			}
		}
		if pids := controlPlanes(t, v.Name); len(pids) != 0 || !slices.Equal(namespacesOf(t, v.Name), namespaces) {
			t.Fatalf("up with %s changed the VPC: control planes %v, namespaces %v (were %v)", c.what, pids, namespacesOf(t, v.Name), namespaces)
		}
		if err := os.WriteFile(config, saved, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	out, err = v.Command("local", "up", "--name", v.Name).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "resumed") {
		t.Fatalf("up on a VPC that is down: %v\n%s", err, out)
	}
	resumed, err := localvpc.Find(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resumed.Instances, v.Instances) {
		t.Errorf("instances after up resumed the VPC: %+v, want %+v", resumed.Instances, v.Instances)
	}
	if _, err := operator(resumed).DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{
		NetworkInterfaceIds: []string{*eni.NetworkInterface.NetworkInterfaceId}}); err != nil {
		t.Errorf("the ENI created before the crash: %v", err)
	}
	if got := faultsOf(t, v); got != want {
		t.Errorf("faults after a crash and up: %s, want %s", got, want)
	}
}

// TestUpHintsNameTheVPC: what `up` tells to do next reaches the VPC it
// started, not the default one.
func TestUpHintsNameTheVPC(t *testing.T) {
	testenv.Privileged(t)
	bin := testenv.Binary(t, "vpcnet")
	name := localvpctest.NamePrefix + tagSurvive + testenv.RandomHex(3)
	out, err := exec.Command(bin, "local", "up", "--name", name).Output()
	t.Cleanup(func() { _ = exec.Command(bin, "local", "down", "--name", name).Run() })
	if err != nil {
		t.Fatalf("up: %v\n%s", err, stderrOf(err))
	}
	for _, hint := range []string{"vpcnet local env --name " + name, "vpcnet local exec --name " + name + " 1"} {
		if !strings.Contains(string(out), hint) {
			t.Errorf("up printed no hint %q:\n%s", hint, out)
		}
	}
}
