package localvpc_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/localvpc"
)

// TestExternalHost: with --external-host, a connection from an instance to
// the host outside the VPC arrives from the instance's own address (no NAT
// in the VPC), the ENI's source/destination check still applies on the way
// out, status and env name the host, and down removes its namespace.
func TestExternalHost(t *testing.T) {
	v := up(t, tagExternal, "--external-host")
	ext := localvpc.ExternalHostAddr.String()
	if v.ExternalHost != ext || v.ExternalNamespace != v.Name+"-ext" {
		t.Fatalf("control record: external host %q in %q, want %s in %s-ext", v.ExternalHost, v.ExternalNamespace, ext, v.Name)
	}
	if out := v.Vpcnet("local", "env", "--name", v.Name); !strings.Contains(out, localvpc.EnvExternalHost+`="`+ext+`"`) {
		t.Errorf("local env does not export %s=%s:\n%s", localvpc.EnvExternalHost, ext, out)
	}
	if out := v.Vpcnet("local", "status", "--name", v.Name); !strings.Contains(out, "external host: "+ext) {
		t.Errorf("local status does not show the external host:\n%s", out)
	}

	in1 := v.Instances[0]
	var ln net.Listener
	inNS(t, v.ExternalNamespace, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(ext, "0"))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c.RemoteAddr()
		c.Close()
	}()
	c, err := dial(in1.Namespace, ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("instance 1 cannot connect to the external host: %v", err)
	}
	c.Close()
	select {
	case from := <-accepted:
		if got := from.(*net.TCPAddr).IP.String(); got != in1.PrivateIP {
			t.Errorf("the external host sees the connection from %s, want instance 1's %s", got, in1.PrivateIP)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the external host accepted nothing")
	}

	// An address the instance configured but its ENI does not own stays
	// in the VPC, as on AWS.
	eni := primaryENI(t, v.EC2(), in1.ID)
	x := netip.MustParseAddr(in1.PrivateIP).Next().Next().Next().Next().String()
	mustRun(t, in1.Namespace, "ip", "addr", "add", x+"/32", "dev", "eth0")
	f := &udpFlow{t: t, from: in1.Namespace, to: net.JoinHostPort(ext, "7000"), got: listenUDP(t, v.ExternalNamespace, net.JoinHostPort(ext, "7000")), marker: in1.PrivateIP}
	f.delivered(in1.PrivateIP, "a datagram from instance 1's address reaches the external host")
	f.dropped(x, "a datagram from "+x+", not assigned to the ENI, is dropped on its way out")
	if _, err := v.EC2().ModifyNetworkInterfaceAttribute(t.Context(), &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: eni.NetworkInterfaceId, SourceDestCheck: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	f.delivered(x, "a datagram from "+x+" reaches the external host with the check off")

	v.Vpcnet("local", "down", "--name", v.Name)
	if got := namespacesOf(t, v.Name); len(got) != 0 {
		t.Errorf("namespaces left by down: %v", got)
	}
}
