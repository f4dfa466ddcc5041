package localvpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// Render writes the local VPC for a person: endpoints, default group,
// external host, the cluster's API, subnets and instances.
func (c *Control) Render(w io.Writer) {
	fmt.Fprintf(w, "local VPC %s (%s) in %s, control plane pid %d\n", c.Name, c.VPCID, c.Region, c.PID)
	fmt.Fprintf(w, "EC2 API: %s (root namespace), %s (inside the VPC)\n", c.Endpoint, c.VPCEndpoint)
	fmt.Fprintf(w, "default security group: %s\n", c.DefaultGroup)
	if c.ExternalHost != "" {
		fmt.Fprintf(w, "external host: %s (namespace %s), outside the VPC\n", c.ExternalHost, c.ExternalNamespace)
	}
	if c.KubernetesAPI != "" {
		fmt.Fprintf(w, "Kubernetes API: %s (root namespace, forwarded to the API server's endpoint ENI); KUBECONFIG=%s\n", c.KubernetesAPI, c.KubernetesKubeconfig)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tCIDR\tZONE")
	for _, s := range c.Subnets {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.ID, s.CIDR, s.Zone)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tINSTANCE\tTYPE\tSUBNET\tZONE\tADDRESS\tNAMESPACE")
	for i, in := range c.Instances {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, in.ID, in.Type, in.SubnetID, in.Zone, in.PrivateIP, in.Namespace)
	}
	tw.Flush()
}

// Admin calls the control plane's admin API (/vpcnet/...) on the root
// loopback: in, if not nil, as the JSON body; the JSON reply into out.
func (c *Control) Admin(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, body)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the control plane does not answer: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(data)))
	}
	return json.Unmarshal(data, out)
}
