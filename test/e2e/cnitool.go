package e2e

import (
	"encoding/json"
	"fmt"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// CNITool runs cnitool (libcni, as a runtime would) with the plugins
// running in NSPath. The container ID is derived by cnitool from the
// container namespace's path; results are cached in /var/lib/cni.
type CNITool struct {
	NSPath    string // where the plugins run: the instance
	PluginDir string // CNI_PATH
	ConfDir   string // NETCONFPATH
	Env       []string
}

// Command returns the cnitool invocation of verb (add, check, del) for
// network on the container namespace netns with interface ifName.
func (c CNITool) Command(t testing.TB, verb, network, netns, ifName string) Command {
	t.Helper()
	return Command{
		NSPath: c.NSPath,
		Name:   testenv.Tool(t, "cnitool"),
		Args:   []string{verb, network, netns},
		Env: append([]string{
			"CNI_PATH=" + c.PluginDir,
			"NETCONFPATH=" + c.ConfDir,
			"CNI_IFNAME=" + ifName,
		}, c.Env...),
	}
}

// Add runs ADD and returns the result (converted to CNIVersion).
func (c CNITool) Add(t testing.TB, network, netns, ifName string) (*current.Result, Result) {
	t.Helper()
	r := c.Command(t, "add", network, netns, ifName).Run()
	if r.Err != nil {
		return nil, r
	}
	var res current.Result
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		r.Err = fmt.Errorf("decode ADD result: %w", err)
		return nil, r
	}
	return &res, r
}

// Check runs CHECK.
func (c CNITool) Check(t testing.TB, network, netns, ifName string) Result {
	t.Helper()
	return c.Command(t, "check", network, netns, ifName).Run()
}

// Del runs DEL.
func (c CNITool) Del(t testing.TB, network, netns, ifName string) Result {
	t.Helper()
	return c.Command(t, "del", network, netns, ifName).Run()
}
