package vpcpod

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

const (
	// DefaultAddTimeout bounds how long ADD waits for vpcnetd, which may
	// be waiting for the pool to grow (an ENI attach takes seconds).
	DefaultAddTimeout = 15 * time.Second
	// FallbackMTU is the veth MTU when neither the config nor vpcnetd's
	// reply gives one: the one every path carries.
	FallbackMTU = 1500
	// MTU bounds, as aws-node's AWS_VPC_ENI_MTU.
	minMTU, maxMTU = 576, 9001
	// maxVethPrefix is the longest host veth prefix (aws-node's limit):
	// the rest of the 15 characters is the attachment's hash.
	maxVethPrefix = 4
)

// Config is vpc-pod's network configuration. Field names are camelCase
// and, where they mean the same, aws-cni's (vethPrefix, mtu,
// pluginLogFile, pluginLogLevel), so that an aws-cni conflist entry works
// with its type changed.
type Config struct {
	types.NetConf

	// Socket is vpcnetd's unix socket.
	Socket string `json:"socket"`
	// VethPrefix starts the host veth names (at most 4 characters).
	VethPrefix string `json:"vethPrefix"`
	// MTU of both veth ends; 0 takes the ENI's MTU from vpcnetd's reply.
	// aws-cni writes it as a string ("9001"); both forms are read.
	MTU flexInt `json:"mtu"`
	// AddTimeout, a Go duration ("15s"), bounds how long ADD waits for
	// vpcnetd's address.
	AddTimeout string `json:"addTimeout"`
	// LogFile and LogLevel add a JSON log of this plugin's own, besides
	// VPCNET_LOG_FILE; pluginLogFile and pluginLogLevel are aws-cni's
	// spellings.
	LogFile        *string `json:"logFile"`
	PluginLogFile  *string `json:"pluginLogFile"`
	LogLevel       *string `json:"logLevel"`
	PluginLogLevel *string `json:"pluginLogLevel"`

	addTimeout time.Duration
	logFile    string
	logLevel   slog.Level
}

// flexInt is an integer written as a JSON number or a string of digits.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if unq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(unq)
		if s == "" {
			*f = 0
			return nil
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[int]()}
	}
	*f = flexInt(n)
	return nil
}

// reservedPrefixes are names of the node's own interfaces: a vethPrefix
// that starts them would make GC look at ENIs and loopback.
var reservedPrefixes = []string{"eth", "lo", "vlan", "ens", "enp"}

// decodeConfig reads and validates the config on stdin, for every verb.
// Malformed JSON is code 6, a bad field code 7 naming it, an unsupported
// cniVersion code 1.
func decodeConfig(stdin []byte) (*Config, error) {
	var conf Config
	if err := cni.DecodeConfig(stdin, &conf); err != nil {
		return nil, err
	}
	if conf.Socket == "" {
		conf.Socket = nodeapi.DefaultSocket
	} else if !strings.HasPrefix(conf.Socket, "/") {
		return nil, cni.FieldError("socket", "%q is not an absolute path", conf.Socket)
	}
	if err := checkVethPrefix(&conf); err != nil {
		return nil, err
	}
	if conf.MTU != 0 && (conf.MTU < minMTU || conf.MTU > maxMTU) {
		return nil, cni.FieldError("mtu", "%d is out of range: use %d to %d, or leave it out to take the ENI's", conf.MTU, minMTU, maxMTU)
	}
	conf.addTimeout = DefaultAddTimeout
	if conf.AddTimeout != "" {
		d, err := time.ParseDuration(conf.AddTimeout)
		if err != nil || d <= 0 {
			return nil, cni.FieldError("addTimeout", "%q is not a positive duration such as \"15s\"", conf.AddTimeout)
		}
		conf.addTimeout = d
	}
	if err := foldLogFields(&conf); err != nil {
		return nil, err
	}
	return &conf, nil
}

func checkVethPrefix(conf *Config) error {
	if conf.VethPrefix == "" {
		conf.VethPrefix = nodeapi.DefaultVethPrefix
		return nil
	}
	p := conf.VethPrefix
	if len(p) > maxVethPrefix {
		return cni.FieldError("vethPrefix", "%q is longer than %d characters", p, maxVethPrefix)
	}
	if err := netops.ValidateIfName(p); err != nil {
		return cni.FieldError("vethPrefix", "%v", err)
	}
	for _, r := range reservedPrefixes {
		if strings.HasPrefix(p, r) || strings.HasPrefix(r, p) {
			return cni.FieldError("vethPrefix", "%q clashes with the node's own interface names (%s...); choose another, e.g. %q", p, r, nodeapi.DefaultVethPrefix)
		}
	}
	return nil
}

// foldLogFields resolves the two spellings of the log settings.
func foldLogFields(conf *Config) error {
	same := func(a, b string) bool { return a == b }
	merged, err := cni.MergeSpellings(same, strconv.Quote,
		cni.Spelling[string]{Field: "logFile", Value: conf.LogFile}, cni.Spelling[string]{Field: "pluginLogFile", Value: conf.PluginLogFile})
	if err != nil {
		return err
	}
	file := merged.Value
	switch {
	case file == "stdout":
		return cni.FieldError(merged.Field, "stdout carries the CNI result; log to a file or \"stderr\"")
	case file != "" && file != "stderr" && !strings.HasPrefix(file, "/"):
		return cni.FieldError(merged.Field, "%q is not an absolute path", file)
	}
	conf.logFile = file
	mergedLevel, err := cni.MergeSpellings(same, strconv.Quote,
		cni.Spelling[string]{Field: "logLevel", Value: conf.LogLevel}, cni.Spelling[string]{Field: "pluginLogLevel", Value: conf.PluginLogLevel})
	if err != nil {
		return err
	}
	level := mergedLevel.Value
	switch strings.ToLower(level) {
	case "", "info":
		conf.logLevel = slog.LevelInfo
	case "debug", "trace":
		conf.logLevel = slog.LevelDebug
	case "warn", "warning":
		conf.logLevel = slog.LevelWarn
	case "error", "fatal":
		conf.logLevel = slog.LevelError
	default:
		return cni.FieldError(mergedLevel.Field, "%q is not one of debug, info, warn, error", level)
	}
	return nil
}

// podArgs are the Kubernetes fields of CNI_ARGS that vpcnetd records with
// the assignment.
type podArgs struct {
	namespace, name, uid, infraContainerID string
}

// parsePodArgs reads CNI_ARGS ("K1=V1;K2=V2"). Keys other than the K8S_POD_*
// ones are ignored, whether or not IgnoreUnknown is given: runtimes pass
// keys for other plugins. The pod fields are optional (cnitool and podman
// send only some): vpcnetd keys assignments by attachment.
func parsePodArgs(s string) (podArgs, error) {
	var p podArgs
	if strings.TrimSpace(s) == "" {
		return p, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return podArgs{}, cni.EnvError("CNI_ARGS", "%q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			p.namespace = v
		case "K8S_POD_NAME":
			p.name = v
		case "K8S_POD_UID":
			p.uid = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			p.infraContainerID = v
		}
	}
	return p, nil
}
