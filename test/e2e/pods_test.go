package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

// TestPods runs pods through containerd's CRI on two instances of a local
// VPC, in two subnets, each with its own vpcnetd: every pod gets an address
// that EC2 holds on its node's ENIs; pods on the primary and on a secondary
// ENI reach a pod and the instance on the other node; a released address
// cools down; after the pods go the host and EC2 hold nothing of them.
func TestPods(t *testing.T) {
	v := localvpctest.Up(t, nsTag+"pods", "--instances", "2", "--instance-type", "m5.large")
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
