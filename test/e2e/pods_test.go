package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

// TestPods runs pods through containerd's CRI on two instances of a local
// VPC, in two subnets, each with its own vpcnetd: every pod gets an address
// that EC2 holds on its node's ENIs; pods on the primary and on a secondary
// ENI reach a pod and the instance on the other node; a released address
// cools down; after the pods go the host and EC2 hold nothing of them.
func TestPods(t *testing.T) {
	v := localvpctest.Up(t, nsTag+"pods", "--instances", "2", "--instance-type", "m5.large", "--external-host")
	n1 := StartPodNode(t, v, 1)
	n2 := StartPodNode(t, v, 2)

	server := n2.RunPod(t, "server", HTTPServer("hello-from-"+n2.ID)...)
	if held := HeldBy(t, v, n2.ID); held[server.IP] == "" {
		t.Fatalf("pod server on %s got %s, which EC2 does not hold on an ENI of the instance (%v)", n2.ID, server.IP, held)
	}
	// Eleven pods on node 1: an m5.large's primary ENI carries 9, so the
	// last ones are on a secondary ENI, routed through its own table.
	var clients []Pod
	for i := 0; i < 11; i++ {
		clients = append(clients, n1.RunPod(t, fmt.Sprintf("client%02d", i), "sleep", "600"))
	}
	held := HeldBy(t, v, n1.ID)
	seen := map[netip.Addr]string{}
	onSecondary := -1
	for i, c := range clients {
		where := held[c.IP]
		if where == "" {
			t.Fatalf("pod %s got %s, which EC2 does not hold on an ENI of %s", c.Name, c.IP, n1.ID)
		}
		if prev, dup := seen[c.IP]; dup {
			t.Fatalf("pods %s and %s both got %s", prev, c.Name, c.IP)
		}
		seen[c.IP] = c.Name
		if !strings.Contains(where, "(device 0)") {
			onSecondary = i
		}
	}
	if onSecondary < 0 {
		t.Fatalf("no pod of 11 on %s landed on a secondary ENI: %v", n1.ID, held)
	}
	external := serveSource(t, v)
	want := "hello-from-" + n2.ID
	for _, c := range []Pod{clients[0], clients[onSecondary]} {
		where := held[c.IP]
		t.Run("pod on "+where+" fetches from the other node's pod", func(t *testing.T) {
			got := n1.CRI.Exec(c.Container, wget(fmt.Sprintf("http://%s:8080/", server.IP))...).MustRun(t)
			if strings.TrimSpace(got) != want {
				t.Errorf("GET from %s = %q, want %q", c.IP, got, want)
			}
		})
		t.Run("pod on "+where+" reaches the other instance", func(t *testing.T) {
			n1.CRI.Exec(c.Container, "ping", "-c", "1", "-W", "5", v.Instances[1].PrivateIP).MustRun(t)
		})
		t.Run("pod on "+where+" leaves the VPC SNATed to the node's primary address", func(t *testing.T) {
			got := n1.CRI.Exec(c.Container, wget(external.URL)...).MustRun(t)
			if src := strings.TrimSpace(got); src != v.Instances[0].PrivateIP {
				t.Errorf("the host outside the VPC saw source %s, want node 1's primary %s (the pod's %s must not leave the VPC)", src, v.Instances[0].PrivateIP, c.IP)
			}
		})
	}

	// The agent's view matches: 11 assigned on node 1.
	st := n1.Status(t)
	if st.Totals.Assigned != 11 {
		t.Errorf("node 1 status: %+v, want 11 assigned", st.Totals)
	}
	// A removed pod's address goes into cooldown.
	n1.CRI.Crictl("stopp", clients[0].ID).MustRun(t)
	n1.CRI.Crictl("rmp", clients[0].ID).MustRun(t)
	if st := n1.Status(t); st.Totals.Assigned != 10 || st.Totals.Cooldown != 1 {
		t.Errorf("after removing one pod: %+v, want 10 assigned and 1 in cooldown", st.Totals)
	}
}

// sourceServer answers every request with the request's source address,
// from the local VPC's host outside the VPC (--external-host).
type sourceServer struct{ URL string }

func serveSource(t *testing.T, v *localvpctest.VPC) sourceServer {
	t.Helper()
	if v.ExternalHost == "" {
		t.Fatal("the local VPC has no external host (up --external-host)")
	}
	ext, err := ns.GetNS(netops.NamedNSPath(v.ExternalNamespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ext.Close() })
	var l net.Listener
	err = ext.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(v.ExternalHost, "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return sourceServer{URL: "http://" + l.Addr().String() + "/"}
}
