package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// vpcPrefix starts the name of every local VPC the benchmark starts, so
// that those a crashed run left are found and taken down (their control
// planes run in sessions of their own and outlive the benchmark).
const vpcPrefix = "vpcbl"

// benchLocalVPC measures the local VPC as its users meet it: the EC2 API
// through the SDK (latency, throughput with and without EC2's request
// throttling), how soon an attached ENI's device appears on the instance,
// and `vpcnet local up` and `down`.
func benchLocalVPC() {
	cleanLocalVPCs(vpcPrefix)
	defer cleanLocalVPCs(vpcPrefix)
	// A Ctrl-C must not leave control planes behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer func() { signal.Stop(sigs); close(sigs) }()
	go func() {
		if _, ok := <-sigs; ok {
			cleanLocalVPCs(vpcPrefix)
			cleanLeftovers()
			os.Exit(130)
		}
	}()

	fmt.Println("## Local VPC")
	fmt.Println()
	fmt.Println("A local VPC started with `vpcnet local up` (m5.large instances), called through aws-sdk-go-v2 from the root namespace with retries off. Unless a row says otherwise, EC2's request throttling is off (`--throttle '{\"disabled\":true}'`), so that the rows measure the control plane, not the token buckets.")
	fmt.Println()

	v, err := upVPC("api", "--instances", "1", "--throttle", `{"disabled":true}`)
	if err != nil {
		fmt.Printf("error: %v\n\n", err)
		return
	}
	defer v.down()

	var rows [][]string
	for _, n := range []int{10, 500} {
		rows = append(rows, describeRow(v, n))
	}
	table([]string{"DescribeNetworkInterfaces, all ENIs", "median (ms)", "p95 (ms)"}, rows)

	rows = [][]string{rateRow(v, "throttling off", 8, 3*time.Second)}
	if t, err := upVPC("thr", "--instances", "1"); err != nil {
		rows = append(rows, []string{"EC2's default buckets", "error: " + err.Error(), "", ""})
	} else {
		rows = append(rows, rateRow(t, "EC2's default buckets (100 burst, 20/s)", 8, 5*time.Second))
		t.down()
	}
	fmt.Println("DescribeSubnets from 8 goroutines, one client, no retries:")
	fmt.Println()
	table([]string{"configuration", "answered calls/s", "RequestLimitExceeded/s", "calls"}, rows)

	fmt.Println("From AttachNetworkInterface returning to the ENI's device being in the instance's namespace (netops.WaitForLink), no injected attach delay; target < 50 ms:")
	fmt.Println()
	table([]string{"measurement", "median (ms)", "p95 (ms)", "n"}, attachRows(v))
	v.down()

	fmt.Println("`vpcnet local up` (until the control plane answers and every instance has its primary ENI) and `vpcnet local down` (wall time of the command):")
	fmt.Println()
	rows = nil
	for _, n := range []int{2, 10} {
		rows = append(rows, upDownRow(n))
	}
	table([]string{"instances", "up median (ms)", "up p95 (ms)", "down median (ms)", "down p95 (ms)"}, rows)
}

// benchVPC is a local VPC of the benchmark and the operator's client.
type benchVPC struct {
	*localvpc.Control
	ec2  *ec2.Client
	once sync.Once
}

func vpcnetBin() string { return filepath.Join(*binDir, "vpcnet") }

func upVPC(tag string, flags ...string) (*benchVPC, error) {
	return upNamedVPC(vpcPrefix+tag, flags...)
}

// upNamedVPC starts a local VPC named prefix + random hex.
func upNamedVPC(prefix string, flags ...string) (*benchVPC, error) {
	name := prefix + randomSuffix()
	args := append([]string{"local", "up", "--name", name}, flags...)
	if out, err := exec.Command(vpcnetBin(), args...).CombinedOutput(); err != nil {
		_ = localvpc.Down(name)
		return nil, fmt.Errorf("vpcnet %s: %v: %s", strings.Join(args, " "), err, out)
	}
	c, err := localvpc.Find(name)
	if err != nil {
		_ = localvpc.Down(name)
		return nil, err
	}
	client := ec2.New(ec2.Options{
		Region:       c.Region,
		BaseEndpoint: aws.String(c.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		Retryer:      aws.NopRetryer{},
		HTTPClient:   cloud.HTTPClientFor(awshttp.NewBuildableClient()),
	})
	return &benchVPC{Control: c, ec2: client}, nil
}

func (v *benchVPC) down() {
	v.once.Do(func() {
		if out, err := exec.Command(vpcnetBin(), "local", "down", "--name", v.Name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: vpcnet local down --name %s: %v: %s\n", v.Name, err, out)
		}
	})
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cleanLocalVPCs takes down every local VPC whose name starts with prefix:
// those of this run, and those a crashed run left (running or not).
func cleanLocalVPCs(prefix string) {
	entries, _ := os.ReadDir(localvpc.BaseStateDir)
	names := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names[e.Name()] = true
		}
	}
	// Namespaces whose state directory is already gone.
	nss, _ := netops.ListNamedNS(prefix)
	for _, n := range nss {
		name, _, _ := strings.Cut(n, "-")
		names[name] = true
	}
	for name := range names {
		if err := localvpc.Down(name); err != nil {
			fmt.Fprintf(os.Stderr, "bench: taking down local VPC %s: %v\n", name, err)
		}
	}
}

// describeRow grows the VPC to n ENIs (created untimed) and times
// DescribeNetworkInterfaces of all of them.
func describeRow(v *benchVPC, n int) []string {
	label := fmt.Sprintf("%d ENIs", n)
	ctx := context.Background()
	have, err := countENIs(ctx, v)
	if err != nil {
		return []string{label, "error: " + err.Error(), ""}
	}
	for ; have < n; have++ {
		if _, err := v.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(v.Subnets[0].ID)}); err != nil {
			return []string{label, "error: " + err.Error(), ""}
		}
	}
	var s sample
	for i := 0; i < *iterations; i++ {
		start := time.Now()
		out, err := v.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
		d := time.Since(start)
		if err != nil {
			return []string{label, "error: " + err.Error(), ""}
		}
		if len(out.NetworkInterfaces) != n {
			return []string{label, fmt.Sprintf("error: %d ENIs described", len(out.NetworkInterfaces)), ""}
		}
		s = append(s, d)
	}
	return []string{label, ms(s.median()), ms(s.p95())}
}

func countENIs(ctx context.Context, v *benchVPC) (int, error) {
	out, err := v.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil {
		return 0, err
	}
	return len(out.NetworkInterfaces), nil
}

// rateRow calls DescribeSubnets from workers goroutines for d and counts
// the answers and the throttled calls.
func rateRow(v *benchVPC, label string, workers int, d time.Duration) []string {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ok, throttled, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := v.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
				var ae smithy.APIError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &ae) && ae.ErrorCode() == "RequestLimitExceeded":
					throttled.Add(1)
				case ctx.Err() != nil:
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if f := failed.Load(); f > 0 {
		return []string{label, fmt.Sprintf("error: %d calls failed: %v", f, firstErr.Load()), "", ""}
	}
	return []string{label, fmt.Sprintf("%.0f", float64(ok.Load())/secs), fmt.Sprintf("%.0f", float64(throttled.Load())/secs),
		fmt.Sprint(ok.Load() + throttled.Load())}
}

// attachRows attaches an ENI to the instance, times until its device is
// there, and detaches and deletes it (untimed), *iterations times.
func attachRows(v *benchVPC) [][]string {
	ctx := context.Background()
	inst := v.Instances[0]
	var device, attached sample
	fail := func(err error) [][]string { return [][]string{{"attach", "error: " + err.Error(), "", ""}} }
	for i := 0; i < *iterations; i++ {
		created, err := v.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(inst.SubnetID)})
		if err != nil {
			return fail(err)
		}
		eni := created.NetworkInterface
		mac, _ := net.ParseMAC(*eni.MacAddress)
		att, err := v.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
			NetworkInterfaceId: eni.NetworkInterfaceId, InstanceId: aws.String(inst.ID), DeviceIndex: aws.Int32(1)})
		if err != nil {
			return fail(err)
		}
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = netops.WaitForLink(wctx, netops.NamedNSPath(inst.Namespace), mac)
		cancel()
		if err != nil {
			return fail(err)
		}
		device = append(device, time.Since(start))
		// The API says "attached" once the device exists; poll it.
		for {
			n, err := describe(ctx, v, *eni.NetworkInterfaceId)
			if err != nil {
				return fail(err)
			}
			if n.Attachment != nil && n.Attachment.Status == ec2types.AttachmentStatusAttached {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		attached = append(attached, time.Since(start))

		if _, err := v.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: att.AttachmentId}); err != nil {
			return fail(err)
		}
		for {
			n, err := describe(ctx, v, *eni.NetworkInterfaceId)
			if err != nil {
				return fail(err)
			}
			if n.Attachment == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := v.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: eni.NetworkInterfaceId}); err != nil {
			return fail(err)
		}
	}
	return [][]string{
		{"device in the instance", ms(device.median()), ms(device.p95()), fmt.Sprint(len(device))},
		{"attachment \"attached\" in DescribeNetworkInterfaces (polled every 2 ms)", ms(attached.median()), ms(attached.p95()), fmt.Sprint(len(attached))},
	}
}

func describe(ctx context.Context, v *benchVPC, id string) (ec2types.NetworkInterface, error) {
	out, err := v.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil {
		return ec2types.NetworkInterface{}, err
	}
	return out.NetworkInterfaces[0], nil
}

// upDownRow times `vpcnet local up` and `down` of a VPC with n instances.
func upDownRow(n int) []string {
	var up, down sample
	for i := 0; i < *iterations; i++ {
		name := vpcPrefix + "up" + randomSuffix()
		start := time.Now()
		out, err := exec.Command(vpcnetBin(), "local", "up", "--name", name, "--instances", fmt.Sprint(n)).CombinedOutput()
		d := time.Since(start)
		if err != nil {
			_ = localvpc.Down(name)
			return []string{fmt.Sprint(n), fmt.Sprintf("error: %v: %s", err, out), "", "", ""}
		}
		up = append(up, d)
		start = time.Now()
		out, err = exec.Command(vpcnetBin(), "local", "down", "--name", name).CombinedOutput()
		d = time.Since(start)
		if err != nil {
			_ = localvpc.Down(name)
			return []string{fmt.Sprint(n), fmt.Sprintf("error: %v: %s", err, out), "", "", ""}
		}
		down = append(down, d)
	}
	return []string{fmt.Sprint(n), ms(up.median()), ms(up.p95()), ms(down.median()), ms(down.p95())}
}
