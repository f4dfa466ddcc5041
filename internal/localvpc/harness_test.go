package localvpc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// This file is what the tests of this package share: clients of a running
// local VPC (the SDK as the operator, Debian's AWS CLI), waiting for the
// asynchronous parts of EC2, and traffic between namespaces.

// converge bounds every wait for something the control plane does in the
// background (an attachment, a datapath change). It is a failure bound,
// not a speed requirement: the benchmark measures speed.
const converge = 30 * time.Second

// up starts a local VPC with localvpctest.Up and, when the test fails,
// logs the end of its control plane's log (before the VPC, and the log,
// are taken down).
func up(t *testing.T, tag string, flags ...string) *localvpctest.VPC {
	t.Helper()
	v := localvpctest.Up(t, tag, flags...)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b, err := os.ReadFile(filepath.Join(localvpc.StateDir(v.Name), "control-plane.jsonl"))
		if err != nil {
			t.Logf("control plane log of %s: %v", v.Name, err)
			return
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("control plane log of %s (last %d lines):\n%s", v.Name, min(len(lines), 40), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	})
	return v
}

// operator returns an EC2 client with the operator's credentials for the
// control plane described by c. A restarted control plane may listen on
// another port: take c from localvpc.Find after a restart.
func operator(c *localvpc.Control, optFns ...func(*ec2.Options)) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       c.Region,
		BaseEndpoint: aws.String(c.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
	}, optFns...)
}

// noRetries makes one call a single attempt.
func noRetries(o *ec2.Options) { o.Retryer = aws.NopRetryer{} }

// apiCode returns the EC2 error code of err, "" when it carries none.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func createENI(t testing.TB, c *ec2.Client, subnetID string, tags ...ec2types.Tag) ec2types.NetworkInterface {
	t.Helper()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnetID)}
	if len(tags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: tags}}
	}
	out, err := c.CreateNetworkInterface(t.Context(), in)
	if err != nil {
		t.Fatalf("CreateNetworkInterface in %s: %v", subnetID, err)
	}
	return *out.NetworkInterface
}

func attachENI(t testing.TB, c *ec2.Client, eniID, instanceID string, index int32) string {
	t.Helper()
	out, err := c.AttachNetworkInterface(t.Context(), &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(eniID), InstanceId: aws.String(instanceID), DeviceIndex: aws.Int32(index),
	})
	if err != nil {
		t.Fatalf("AttachNetworkInterface %s to %s at %d: %v", eniID, instanceID, index, err)
	}
	return *out.AttachmentId
}

func describeENI(t testing.TB, c *ec2.Client, id string) ec2types.NetworkInterface {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil {
		t.Fatalf("DescribeNetworkInterfaces %s: %v", id, err)
	}
	if len(out.NetworkInterfaces) != 1 {
		t.Fatalf("DescribeNetworkInterfaces %s returned %d interfaces", id, len(out.NetworkInterfaces))
	}
	return out.NetworkInterfaces[0]
}

// attachmentStatus is the attachment status of an ENI, "" when it has none.
func attachmentStatus(n ec2types.NetworkInterface) string {
	if n.Attachment == nil {
		return ""
	}
	return string(n.Attachment.Status)
}

// waitAttachment waits until the ENI's attachment has status ("" for an
// ENI with no attachment, available again) and returns the ENI.
func waitAttachment(t testing.TB, c *ec2.Client, eniID, status string) ec2types.NetworkInterface {
	t.Helper()
	var n ec2types.NetworkInterface
	testenv.EventuallyTrue(t, fmt.Sprintf("attachment of %s is %q", eniID, status), converge, func() bool {
		n = describeENI(t, c, eniID)
		return attachmentStatus(n) == status
	})
	return n
}

func nsPath(name string) string { return netops.NamedNSPath(name) }

// waitDevice waits until the namespace holds a device with the MAC.
func waitDevice(t testing.TB, nsName, mac string) netlink.Link {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), converge)
	defer cancel()
	l, err := netops.WaitForLink(ctx, nsPath(nsName), hw)
	if err != nil {
		t.Fatalf("device %s in %s: %v", mac, nsName, err)
	}
	return l
}

// deviceIn returns the device with the MAC in the namespace, or nil.
func deviceIn(t testing.TB, nsName, mac string) netlink.Link {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	var l netlink.Link
	err = ns.WithNetNSPath(nsPath(nsName), func(ns.NetNS) error {
		var err error
		l, err = netops.LinkByMAC(hw)
		return err
	})
	if errors.Is(err, netops.ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("look for %s in %s: %v", mac, nsName, err)
	}
	return l
}

// run runs a command in a namespace and returns its combined output.
func run(nsName, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netops.StartIn(nsPath(nsName), cmd); err != nil {
		return "", fmt.Errorf("start %s in %s: %w", name, nsName, err)
	}
	err := cmd.Wait()
	return out.String(), err
}

func mustRun(t testing.TB, nsName, name string, args ...string) string {
	t.Helper()
	out, err := run(nsName, name, args...)
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", nsName, name, strings.Join(args, " "), err, out)
	}
	return out
}

// pings reports whether one ping from the namespace to dst is answered.
func pings(nsName, dst string) bool {
	_, err := run(nsName, "ping", "-n", "-c", "1", "-W", "1", dst)
	return err == nil
}

// curl runs curl in the namespace and returns the body and HTTP status.
func curl(t testing.TB, nsName string, args ...string) (string, int) {
	t.Helper()
	out := mustRun(t, nsName, "curl", append([]string{"-sS", "--max-time", "10", "-w", "\n%{http_code}"}, args...)...)
	i := strings.LastIndexByte(out, '\n')
	var code int
	fmt.Sscan(out[i+1:], &code)
	return out[:i], code
}

// imdsGet reads a metadata path (under latest/meta-data/) from inside the
// namespace with IMDSv1, failing unless it answers 200.
func imdsGet(t testing.TB, nsName, path string) string {
	t.Helper()
	body, code := curl(t, nsName, "http://169.254.169.254/latest/meta-data/"+path)
	if code != 200 {
		t.Fatalf("metadata %s from %s: HTTP %d %s", path, nsName, code, body)
	}
	return body
}

// inNS runs f with the calling goroutine in the namespace; sockets it
// opens stay there.
func inNS(t testing.TB, nsName string, f func() error) {
	t.Helper()
	if err := ns.WithNetNSPath(nsPath(nsName), func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in %s: %v", nsName, err)
	}
}

// datagrams records what a UDP socket in a namespace receives: sender and
// payload.
type datagrams struct {
	mu  sync.Mutex
	got map[string]bool // "src payload"
}

func (d *datagrams) has(src, payload string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got[src+" "+payload]
}

// listenUDP receives datagrams on addr inside the namespace until the test
// ends.
func listenUDP(t testing.TB, nsName, addr string) *datagrams {
	t.Helper()
	var conn net.PacketConn
	inNS(t, nsName, func() error {
		var err error
		conn, err = net.ListenPacket("udp4", addr)
		return err
	})
	t.Cleanup(func() { conn.Close() })
	d := &datagrams{got: map[string]bool{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			src := from.(*net.UDPAddr).IP.String()
			d.mu.Lock()
			d.got[src+" "+string(buf[:n])] = true
			d.mu.Unlock()
		}
	}()
	return d
}

// sendUDP sends one datagram from src (an address configured in the
// namespace) to dst (host:port).
func sendUDP(t testing.TB, nsName, src, dst, payload string) {
	t.Helper()
	inNS(t, nsName, func() error {
		conn, err := net.ListenPacket("udp4", net.JoinHostPort(src, "0"))
		if err != nil {
			return err
		}
		defer conn.Close()
		to, err := net.ResolveUDPAddr("udp4", dst)
		if err != nil {
			return err
		}
		_, err = conn.WriteTo([]byte(payload), to)
		return err
	})
}

// serveEcho accepts TCP connections on addr inside the namespace and
// echoes each line back, until the test ends.
func serveEcho(t testing.TB, nsName, addr string) {
	t.Helper()
	var ln net.Listener
	inNS(t, nsName, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// dial opens a TCP connection from the namespace, giving up after timeout
// (a dropped SYN is never answered).
func dial(nsName, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.WithNetNSPath(nsPath(nsName), func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// echo sends a line over the connection and reads it back.
func echo(c net.Conn, line string) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo of %q came back as %q", line, got)
	}
	return nil
}

// connects reports whether a TCP connection from the namespace to addr is
// set up and carries a line both ways.
func connects(nsName, addr string) bool {
	c, err := dial(nsName, addr, 1500*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c, "hello") == nil
}

// awsCLI runs Debian's AWS CLI v2 (botocore, a client written
// independently of the SDK) against a local VPC's endpoint in the root
// namespace, with nothing of the machine's configuration.
type awsCLI struct {
	endpoint string
	env      []string
}

func newAWSCLI(t testing.TB, c *localvpc.Control, accessKeyID, secret string) *awsCLI {
	t.Helper()
	testenv.Tool(t, "/usr/bin/aws")
	home := t.TempDir()
	for _, f := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(home, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &awsCLI{endpoint: c.Endpoint, env: []string{
		"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
		"AWS_ACCESS_KEY_ID=" + accessKeyID, "AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_DEFAULT_REGION=" + c.Region, "AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=",
		"AWS_MAX_ATTEMPTS=1",
	}}
}

func (a *awsCLI) exec(args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command("/usr/bin/aws", append([]string{"ec2", "--endpoint-url", a.endpoint, "--output", "json"}, args...)...)
	cmd.Env = a.env
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// run runs an ec2 command and decodes its JSON output into out (when not
// nil), failing the test on any error.
func (a *awsCLI) run(t testing.TB, out any, args ...string) {
	t.Helper()
	stdout, stderr, err := a.exec(args...)
	if err != nil {
		t.Fatalf("aws ec2 %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			t.Fatalf("aws ec2 %s printed %q: %v", strings.Join(args, " "), stdout, err)
		}
	}
}

var cliErrorCode = regexp.MustCompile(`An error occurred \(([A-Za-z0-9.]+)\)`)

// fails runs an ec2 command that must fail and returns the EC2 error code
// the CLI reports.
func (a *awsCLI) fails(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, err := a.exec(args...)
	if err == nil {
		t.Fatalf("aws ec2 %s succeeded, want an error:\n%s", strings.Join(args, " "), stdout)
	}
	m := cliErrorCode.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("aws ec2 %s: %v, with no EC2 error code:\n%s", strings.Join(args, " "), err, stderr)
	}
	return m[1]
}
