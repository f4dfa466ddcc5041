package localvpc_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestStatusEnvExec uses `vpcnet local status`, `env` and `exec` as the
// command's help describes them, on a VPC with non-default flags.
func TestStatusEnvExec(t *testing.T) {
	v := up(t, tagCommand, "--instances", "3", "--instance-type", "t3.small", "--region", "eu-west-1")

	t.Run("status", func(t *testing.T) {
		var st localvpc.Status
		if err := json.Unmarshal(vpcnetOutput(t, v, "local", "status", "--name", v.Name, "-o", "json"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Name != v.Name || st.PID != v.PID || st.Endpoint != v.Endpoint || st.Region != "eu-west-1" || st.VPCID != v.VPCID {
			t.Errorf("status: %+v; want name %s, pid %d, endpoint %s, region eu-west-1, %s", st.Control, v.Name, v.PID, v.Endpoint, v.VPCID)
		}
		if st.SecretAccessKey != "" {
			t.Errorf("status shows the operator's secret key")
		}
		if len(st.Instances) != 3 || st.NetworkInterfaces != 3 || st.Attached != 3 || st.SecurityGroups != 1 {
			t.Errorf("status: %d instances, %d ENIs (%d attached), %d groups; want 3, 3 (3), 1",
				len(st.Instances), st.NetworkInterfaces, st.Attached, st.SecurityGroups)
		}
		for _, in := range st.Instances {
			if in.Type != "t3.small" || !strings.HasPrefix(in.Zone, "eu-west-1") {
				t.Errorf("instance %+v: want t3.small in eu-west-1", in)
			}
		}
		table := string(vpcnetOutput(t, v, "local", "status", "--name", v.Name))
		for _, in := range v.Instances {
			if !strings.Contains(table, in.ID) || !strings.Contains(table, in.PrivateIP) {
				t.Errorf("status table does not show %s (%s):\n%s", in.ID, in.PrivateIP, table)
			}
		}
	})

	t.Run("env", func(t *testing.T) {
		testenv.Tool(t, "/usr/bin/aws")
		testenv.Tool(t, "aws")
		// A shell with nothing of AWS configured, as the help suggests:
		// eval the exports, then the CLIs. Debian's v2 needs the endpoint
		// on its command line; the pip v1 reads AWS_ENDPOINT_URL_EC2.
		for _, c := range []struct{ name, cli string }{
			{"Debian CLI v2", `/usr/bin/aws ec2 describe-vpcs --endpoint-url "$AWS_ENDPOINT_URL_EC2" --output json`},
			{"pip CLI v1", `aws ec2 describe-vpcs --output json`},
		} {
			sh := exec.Command("sh", "-c", `eval "$("$VPCNET" local env --name "$NAME")" && `+c.cli)
			sh.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "VPCNET=" + v.Bin, "NAME=" + v.Name}
			out, err := sh.Output()
			if err != nil {
				t.Fatalf("%s after eval of local env: %v\n%s", c.name, err, stderrOf(err))
			}
			var vpcs struct {
				Vpcs []struct {
					VpcID string `json:"VpcId"`
				}
			}
			if err := json.Unmarshal(out, &vpcs); err != nil || len(vpcs.Vpcs) != 1 || vpcs.Vpcs[0].VpcID != v.VPCID {
				t.Errorf("%s: %s (%v), want %s", c.name, out, err, v.VPCID)
			}
		}
	})

	t.Run("exec", func(t *testing.T) {
		in2, in3 := v.Instances[1], v.Instances[2]
		localExec := func(args ...string) *exec.Cmd {
			cmd := v.Command(append([]string{"local", "exec", "--name", v.Name}, args...)...)
			// The caller's credentials and region stay off the instance.
			cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=AKIAFROMTHEOPERATOR", "AWS_REGION=us-west-2", "AWS_PROFILE=operator")
			return cmd
		}
		out, err := localExec("3", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0").Output()
		if err != nil || !strings.Contains(string(out), " "+in3.PrivateIP+"/") {
			t.Errorf("exec 3 -- ip addr: %v %q, want instance 3's %s", err, out, in3.PrivateIP)
		}
		out, err = localExec(in2.ID, "--", "env").Output()
		if err != nil {
			t.Fatal(err)
		}
		var aws []string
		for _, kv := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(kv, "AWS_") {
				aws = append(aws, kv)
			}
		}
		want := []string{"AWS_CONFIG_FILE=" + os.DevNull, "AWS_ENDPOINT_URL_EC2=" + v.VPCEndpoint, "AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull}
		slices.Sort(aws)
		if !slices.Equal(aws, want) {
			t.Errorf("AWS environment on the instance: %v, want %v", aws, want)
		}
		if !strings.Contains(string(out), localvpc.EnvInstance+"="+in2.ID+"\n") {
			t.Errorf("environment on the instance lacks %s=%s", localvpc.EnvInstance, in2.ID)
		}
		err = localExec("1", "--", "sh", "-c", "exit 7").Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("exit status of the command on the instance: %v, want 7", err)
		}
		out, err = localExec("4", "--", "true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `no instance "4"`) {
			t.Errorf("exec on instance 4 of 3: %v %q", err, out)
		}
	})
}

// vpcnetOutput runs vpcnet and returns its standard output, failing t
// (which may be a subtest's) on error.
func vpcnetOutput(t *testing.T, v *localvpctest.VPC, args ...string) []byte {
	t.Helper()
	out, err := v.Command(args...).Output()
	if err != nil {
		t.Fatalf("vpcnet %s: %v\n%s", strings.Join(args, " "), err, stderrOf(err))
	}
	return out
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
