package task

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// probeCommand, as the first argument, makes the test binary run a probe
// instead of the tests: the tasks the tests start run it as their command,
// so what a task sees from inside its namespace is checked by a program
// the tests control, with no tool to install.
const probeCommand = "task-probe"

// probe runs one probe and returns its exit status:
//
//	serve PORT NAME       answer HTTP on PORT with "hello from NAME"
//	get URL               print the body; exit 3 on a non-200 status, 4 when unreachable
//	wait FILE             print "waiting", then block until FILE exists
//	inspect ALLOW DENY ID print "started", read a line from stdin, print an
//	                      inspectReport (ALLOW and DENY are URLs of peers,
//	                      ID another task's ID), exit with inspectExit
//	sandbox PATH...       print a sandboxReport (PATHs: what must be hidden)
func probe(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "probe: what?")
		return 2
	}
	switch args[0] {
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", args[2]) })
		ln, err := net.Listen("tcp", ":"+args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening")
		return exitOf(http.Serve(ln, nil))
	case "get":
		status, body, err := httpGet(args[1])
		switch {
		case err != nil:
			fmt.Println(err)
			return 4
		case status != http.StatusOK:
			fmt.Printf("status %d: %s\n", status, body)
			return 3
		}
		fmt.Print(body)
		return 0
	case "wait":
		fmt.Println("waiting")
		for {
			if _, err := os.Stat(args[1]); err == nil {
				return 0
			}
			time.Sleep(20 * time.Millisecond)
		}
	case "sandbox":
		b, _ := json.Marshal(inspectSandbox(args[1:]))
		fmt.Printf("SANDBOX %s\n", b)
		return 0
	case "inspect":
		fmt.Println("started")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && err != io.EOF {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		rep := inspect(args[1], args[2], args[3])
		b, _ := json.Marshal(rep)
		fmt.Printf("REPORT %s\n", b)
		return inspectExit
	}
	fmt.Fprintf(os.Stderr, "probe: unknown %q\n", args[0])
	return 2
}

// inspectExit is the exit status of the inspect probe: the task's exit
// status must be the command's.
const inspectExit = 7

func exitOf(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// inspectReport is what a task sees of its own network.
type inspectReport struct {
	Eth0       []string `json:"eth0"`    // addresses with their prefix length
	Eth0MAC    string   `json:"eth0MAC"` //
	Gateway    string   `json:"gateway"` // of the default route
	GatewayDev string   `json:"gatewayDev"`
	Blackholes []string `json:"blackholes"` // destinations of blackhole routes, all tables
	IMDS       string   `json:"imds"`       // "ok" or why 169.254.169.254:80 cannot be reached

	// The task metadata endpoint: the container document, the task
	// document, and the status for another task's ID.
	ContainerStatus int             `json:"containerStatus"`
	Container       json.RawMessage `json:"container"`
	TaskStatus      int             `json:"taskStatus"`
	Task            json.RawMessage `json:"task"`
	OtherStatus     int             `json:"otherStatus"`

	Allowed string `json:"allowed"` // "ok: BODY" or the error, for the ALLOW peer
	Denied  string `json:"denied"`
}

func inspect(allow, deny, otherID string) inspectReport {
	var rep inspectReport
	if l, err := netlink.LinkByName(eniIfName); err == nil {
		rep.Eth0MAC = l.Attrs().HardwareAddr.String()
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			rep.Eth0 = append(rep.Eth0, a.IPNet.String())
		}
	}
	routes, _ := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	for _, r := range routes {
		switch {
		case r.Type == unix.RTN_BLACKHOLE && r.Dst != nil:
			rep.Blackholes = append(rep.Blackholes, r.Dst.IP.String())
		case isDefault(r) && r.Gw != nil && r.Gw.To4() != nil && r.Table == unix.RT_TABLE_MAIN:
			rep.Gateway = r.Gw.String()
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				rep.GatewayDev = l.Attrs().Name
			}
		}
	}
	rep.IMDS = dial("169.254.169.254:80")

	base := os.Getenv("ECS_CONTAINER_METADATA_URI_V4")
	var body string
	rep.ContainerStatus, body, _ = httpGet(base)
	rep.Container = jsonOrString(body)
	rep.TaskStatus, body, _ = httpGet(base + "/task")
	rep.Task = jsonOrString(body)
	rep.OtherStatus, _, _ = httpGet(fmt.Sprintf("http://%s/v4/%s", EndpointAddr, otherID))

	rep.Allowed = fetch(allow)
	rep.Denied = fetch(deny)
	return rep
}

// isDefault reports a default route (netlink gives it a nil or a 0/0 Dst).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func dial(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err.Error()
	}
	c.Close()
	return "ok"
}

func fetch(url string) string {
	status, body, err := httpGet(url)
	if err != nil {
		return err.Error()
	}
	if status != http.StatusOK {
		return fmt.Sprintf("status %d", status)
	}
	return "ok: " + strings.TrimSpace(body)
}

// httpGet is a GET with no proxy and a short timeout: a peer whose
// security group drops the SYN must fail, not hang the task.
func httpGet(url string) (int, string, error) {
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func jsonOrString(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

// sandboxReport is what a task's process sees of its sandbox.
type sandboxReport struct {
	PID        int               `json:"pid"`
	Hostname   string            `json:"hostname"`
	Namespaces map[string]string `json:"namespaces"` // type -> "net:[inode]"
	CapEff     uint64            `json:"capEff"`
	NoNewPrivs string            `json:"noNewPrivs"`
	// DelBlackhole is the error of deleting the blackhole route to
	// instance metadata ("" if it was deleted).
	DelBlackhole string `json:"delBlackhole"`
	// Credentials is "ok: ..." or why instance metadata's credentials
	// could not be read.
	Credentials string `json:"credentials"`
	// Visible lists what the task sees in each path that must be hidden.
	Visible map[string][]string `json:"visible"`
	// Secrets is what reading each of the host's secret files gave:
	// "N bytes" or the error.
	Secrets map[string]string `json:"secrets"`
	// Scratch is, for /tmp and /var/tmp, the error of writing a file
	// named after the task's hostname there ("" if written) and then what
	// the directory holds.
	Scratch map[string][]string `json:"scratch"`
}

// secretFiles are host files no task may read (see hostSecrets).
var secretFiles = []string{"/etc/shadow", "/etc/gshadow"}

// scratchFile is the file the sandbox probe writes in each scratch
// directory.
func scratchFile(hostname string) string { return "vpcnet-probe-" + hostname }

func inspectSandbox(hidden []string) sandboxReport {
	rep := sandboxReport{PID: os.Getpid(), Namespaces: map[string]string{}, Visible: map[string][]string{}}
	rep.Hostname, _ = os.Hostname()
	for _, n := range []string{"mnt", "pid", "uts", "ipc", "net"} {
		rep.Namespaces[n], _ = os.Readlink("/proc/self/ns/" + n)
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				fmt.Sscanf(strings.TrimSpace(v), "%x", &rep.CapEff)
			}
			if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok {
				rep.NoNewPrivs = strings.TrimSpace(v)
			}
		}
	}
	_, dst, _ := net.ParseCIDR("169.254.169.254/32")
	if err := netlink.RouteDel(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}); err != nil {
		rep.DelBlackhole = err.Error()
	}
	rep.Credentials = fetch("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
	rep.Secrets = map[string]string{}
	for _, f := range secretFiles {
		if b, err := os.ReadFile(f); err != nil {
			rep.Secrets[f] = err.Error()
		} else {
			rep.Secrets[f] = fmt.Sprintf("%d bytes", len(b))
		}
	}
	rep.Scratch = map[string][]string{}
	for _, d := range []string{"/tmp", "/var/tmp"} {
		werr := ""
		if err := os.WriteFile(filepath.Join(d, scratchFile(rep.Hostname)), []byte("task"), 0o644); err != nil {
			werr = err.Error()
		}
		rep.Scratch[d] = []string{werr}
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			rep.Scratch[d] = append(rep.Scratch[d], e.Name())
		}
	}
	for _, h := range hidden {
		entries, err := os.ReadDir(h)
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if err != nil && !os.IsNotExist(err) {
			names = append(names, "error: "+err.Error())
		}
		rep.Visible[h] = names
	}
	return rep
}
