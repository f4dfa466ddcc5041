package node

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containernetworking/cni/libcni"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
)

// The node's CNI network configuration. On Kubernetes the kubelet reports a
// node NotReady while /etc/cni/net.d holds no network; vpcnetd writes its
// conflist only once it is serving, so that no pod is scheduled to a node
// whose ADDs would fail (aws-node does the same with 10-aws.conflist).

// DefaultCNIConfName is the conflist's file name: sorted first among
// the usual names, as the kubelet takes the first file it finds.
const DefaultCNIConfName = "10-vpcnet.conflist"

// defaultConflist is the conflist written when no template is given: the
// vpc-pod plugin, reaching this agent at socket, with its veth prefix.
func defaultConflist(socket, vethPrefix string) []byte {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "vpcnet",
		"plugins": []map[string]any{{
			"type":       "vpc-pod",
			"socket":     socket,
			"vethPrefix": vethPrefix,
		}},
	}, "", "  ")
	return append(b, '\n')
}

// cniConflist is the content to write: the template file's (a conflist
// that may chain portmap, bandwidth ...) or the default. A template must be
// a conflist libcni accepts and must carry vpc-pod, so that a typo is a
// start-up error, not a node that turns Ready and fails every pod.
func (c Config) cniConflist() ([]byte, error) {
	if c.CNIConfTemplate == "" {
		return defaultConflist(c.Socket, c.Pool.VethPrefix), nil
	}
	data, err := os.ReadFile(c.CNIConfTemplate)
	if err != nil {
		return nil, fmt.Errorf("read the CNI config template: %w", err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("CNI config template %s: %w", c.CNIConfTemplate, err)
	}
	for _, p := range list.Plugins {
		if p.Network.Type == "vpc-pod" {
			return data, nil
		}
	}
	return nil, fmt.Errorf("CNI config template %s: no plugin of type vpc-pod in %q", c.CNIConfTemplate, list.Name)
}

// writeCNIConf writes the conflist to c.CNIConfPath, whole (the kubelet may
// read it at any moment). Nothing to do when the path is empty.
func (c Config) writeCNIConf(data []byte) error {
	if c.CNIConfPath == "" {
		return nil
	}
	if err := atomicfile.Write(c.CNIConfPath, data, 0o644, 0o755); err != nil {
		return fmt.Errorf("write the CNI config: %w", err)
	}
	return nil
}
