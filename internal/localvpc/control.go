// Package localvpc runs a VPC on this machine: the EC2 Query API and the
// instance metadata service (one control-plane process), and a routed VPC
// datapath of real kernel objects in namespaces it owns. The parts live in
// sub-packages: vpc (what EC2 knows, with its rules and limits), ec2api (the
// wire protocol), sigv4 (request signatures), imds (instance metadata) and
// fabric (the datapath). This package wires them into one server and gives
// the `vpcnet local` command what it needs to start, find, use and stop one.
package localvpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// DefaultName is the name of the local VPC when none is given. Every
// namespace of a local VPC starts with its name.
const DefaultName = "vpcnet"

// BaseStateDir holds one state directory per local VPC name.
var BaseStateDir = "/var/lib/vpcnet/local"

// StateDir is where the local VPC called name keeps its state.
func StateDir(name string) string { return filepath.Join(BaseStateDir, name) }

// Control is what a running local VPC publishes for its clients, in
// control.json in its state directory.
type Control struct {
	Name     string    `json:"name"`
	StateDir string    `json:"stateDir"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	// Endpoint is the EC2 API in the root namespace (for the operator,
	// tests and the AWS CLI); VPCEndpoint is the same API inside the VPC,
	// where instances reach it.
	Endpoint    string `json:"endpoint"`
	VPCEndpoint string `json:"vpcEndpoint"`
	Region      string `json:"region"`
	// The operator's credentials. Instances get their own from metadata.
	AccessKeyID     string         `json:"accessKeyId"`
	SecretAccessKey string         `json:"secretAccessKey"`
	VPCID           string         `json:"vpcId"`
	Subnets         []SubnetInfo   `json:"subnets"`
	Instances       []InstanceInfo `json:"instances"`
	DefaultGroup    string         `json:"defaultSecurityGroup"`
	// The host outside the VPC (`up --external-host`), empty without one.
	ExternalHost      string `json:"externalHost,omitempty"`
	ExternalNamespace string `json:"externalNamespace,omitempty"`
	// The cluster (`up --kubernetes`): the API server as forwarded to the
	// root namespace, and the kubeconfig for it (written once the cluster
	// is up).
	KubernetesAPI        string `json:"kubernetesApi,omitempty"`
	KubernetesKubeconfig string `json:"kubeconfig,omitempty"`
}

// SubnetInfo summarises a subnet for people and scripts.
type SubnetInfo struct {
	ID   string `json:"id"`
	CIDR string `json:"cidr"`
	Zone string `json:"availabilityZone"`
}

// InstanceInfo summarises an instance for people and scripts.
type InstanceInfo struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	SubnetID  string `json:"subnetId"`
	Zone      string `json:"availabilityZone"`
	PrivateIP string `json:"privateIp"`
	Namespace string `json:"namespace"`
	// MountNamespace is the pin of the instance's mount namespace (see
	// StartOnInstance).
	MountNamespace string `json:"mountNamespace,omitempty"`
	// KubernetesNode: forwarding on and loose reverse-path filtering, as
	// on an EKS node.
	KubernetesNode bool `json:"kubernetesNode,omitempty"`
}

const controlFile = "control.json"

// ErrNotRunning means no live control plane serves that local VPC.
var ErrNotRunning = errors.New("local VPC is not running")

// ErrDown means the local VPC exists, its state and datapath kept, but its
// control plane does not run (killed, crashed, the machine rebooted):
// `vpcnet local restart` brings it back. An error that is ErrDown is
// ErrNotRunning too.
var ErrDown = errors.New("local VPC's control plane is down")

// notRunning is Find's error: a message a person can act on, which is
// ErrNotRunning, and ErrDown when the VPC exists.
type notRunning struct {
	msg    string
	exists bool
}

func (e *notRunning) Error() string { return e.msg }

func (e *notRunning) Is(target error) bool {
	return target == ErrNotRunning || e.exists && target == ErrDown
}

// NameFlag is what a hint adds to a `vpcnet local` command line for it to
// reach the VPC called name: nothing for the default one.
func NameFlag(name string) string {
	if name == DefaultName {
		return ""
	}
	return " --name " + name
}

// downHint says what to do with a local VPC whose control plane is down.
func downHint(name string) string {
	return fmt.Sprintf("`vpcnet local restart --name %[1]s` resumes it with its ENIs, addresses and datapath; `vpcnet local down --name %[1]s` removes it", name)
}

// Find returns the control record of the running local VPC called name.
// When the VPC exists but its control plane is down, the error wraps
// ErrDown and names the command that resumes it, and the record (if the
// control plane got to write one) is returned too.
func Find(name string) (*Control, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(StateDir(name), controlFile))
	if errors.Is(err, os.ErrNotExist) {
		if exists(name) {
			return nil, &notRunning{fmt.Sprintf("local VPC %q has no control plane (it never finished starting); %s", name, downHint(name)), true}
		}
		return nil, &notRunning{fmt.Sprintf("no local VPC %q (start one with `vpcnet local up%s`)", name, NameFlag(name)), false}
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the local VPC's control file: %w", err)
	}
	var c Control
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("failed to decode %s: %w", controlFile, err)
	}
	if !proc.Alive(c.PID) {
		return &c, &notRunning{fmt.Sprintf("the control plane of local VPC %q (pid %d) is not running; %s", name, c.PID, downHint(name)), true}
	}
	return &c, nil
}

// exists reports whether a local VPC called name has a state (its
// configuration), running or not.
func exists(name string) bool {
	return fileExists(filepath.Join(StateDir(name), configFile))
}

// fileExists reports whether path names something that can be stat'ed.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (c *Control) write() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.StateDir, controlFile), data, 0o600)
}

// Instance resolves a reference to an instance: its ID, or its position
// (1-based) in the order `up` created them.
func (c *Control) Instance(ref string) (InstanceInfo, error) {
	for _, in := range c.Instances {
		if in.ID == ref {
			return in, nil
		}
	}
	if n, err := strconv.Atoi(ref); err == nil && n >= 1 && n <= len(c.Instances) {
		return c.Instances[n-1], nil
	}
	ids := make([]string, len(c.Instances))
	for i, in := range c.Instances {
		ids[i] = in.ID
	}
	return InstanceInfo{}, fmt.Errorf("no instance %q in local VPC %q (instances: %s, or 1..%d)", ref, c.Name, strings.Join(ids, ", "), len(ids))
}

// InstanceEnv turns the environment of a process in the root namespace
// into that of a process on an instance: no AWS credentials or region
// (they come from instance metadata, as on EC2), and the EC2 endpoint
// inside the VPC. An instance shares the machine's files, so the
// operator's shared configuration (~/.aws) is hidden too: the SDK and the
// CLI would take credentials and a region from it before asking metadata.
func (c *Control) InstanceEnv(base []string, instanceID string) []string {
	env := slices.DeleteFunc(slices.Clone(base), func(kv string) bool {
		return strings.HasPrefix(kv, "AWS_")
	})
	return append(env,
		"AWS_CONFIG_FILE="+os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE="+os.DevNull,
		"AWS_ENDPOINT_URL_EC2="+c.VPCEndpoint,
		EnvInstance+"="+instanceID,
		EnvName+"="+c.Name,
	)
}

// Set in the environment of processes that `vpcnet local exec` starts, so
// that vpcnet itself knows it already runs on a local instance.
const (
	EnvInstance = "VPCNET_LOCAL_INSTANCE"
	EnvName     = "VPCNET_LOCAL_NAME"
)

// RootEnv is the environment for the operator's AWS CLI and SDK in the root
// namespace (`eval "$(vpcnet local env)"`).
func (c *Control) RootEnv() [][2]string {
	env := [][2]string{
		{"AWS_ENDPOINT_URL_EC2", c.Endpoint},
		{"AWS_REGION", c.Region},
		{"AWS_DEFAULT_REGION", c.Region},
		{"AWS_ACCESS_KEY_ID", c.AccessKeyID},
		{"AWS_SECRET_ACCESS_KEY", c.SecretAccessKey},
		{"AWS_EC2_METADATA_DISABLED", "true"},
	}
	if c.ExternalHost != "" {
		env = append(env, [2]string{EnvExternalHost, c.ExternalHost}, [2]string{EnvExternalNamespace, c.ExternalNamespace})
	}
	if c.KubernetesKubeconfig != "" {
		if _, err := os.Stat(c.KubernetesKubeconfig); err == nil {
			env = append(env, [2]string{"KUBECONFIG", c.KubernetesKubeconfig})
		}
	}
	return env
}

// Exported by `vpcnet local env` for a VPC with an external host: its
// address and its namespace.
const (
	EnvExternalHost      = "VPCNET_EXTERNAL_HOST"
	EnvExternalNamespace = "VPCNET_EXTERNAL_NAMESPACE"
)

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode, 0o755)
}

// HasInstance reports whether id is one of the local VPC's instances.
func (c *Control) HasInstance(id string) bool {
	for _, in := range c.Instances {
		if in.ID == id {
			return true
		}
	}
	return false
}

// InstanceIDs lists the IDs of the local VPC's instances, for messages.
func (c *Control) InstanceIDs() string {
	ids := make([]string, len(c.Instances))
	for i, in := range c.Instances {
		ids[i] = in.ID
	}
	return strings.Join(ids, ", ")
}

// FindForInstance returns the running local VPC called name, unless
// instanceRef is an instance ID that it does not have and another running
// local VPC does: commands that know a task's instance (task stop, task gc)
// should not make the user name its VPC again.
//
// An instance of a local VPC whose control plane is down is found too, with
// that VPC's ErrDown: a task command given its ID must say to restart that
// VPC rather than take the machine for an EC2 instance.
func FindForInstance(name, instanceRef string) (*Control, error) {
	c, err := Find(name)
	if strings.HasPrefix(instanceRef, "i-") && (err != nil || !c.HasInstance(instanceRef)) {
		entries, _ := os.ReadDir(BaseStateDir)
		for _, e := range entries {
			if other, oerr := Find(e.Name()); other != nil && other.HasInstance(instanceRef) {
				return other, oerr
			}
		}
	}
	return c, err
}
