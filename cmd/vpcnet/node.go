package main

import (
	"context"
	"encoding/json"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node"
)

func nodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "The node agent (vpcnetd) of this node: its pool of pod addresses",
	}
	cmd.AddCommand(nodeStatusCommand())
	return cmd
}

func nodeStatusCommand() *cobra.Command {
	var addr, output, instance, name string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show vpcnetd's ENIs, addresses (free, assigned to which pod, cooldown), prefixes, targets, last decisions and EC2 errors",
		Long: `status reads vpcnetd's introspection endpoint (127.0.0.1:61679 on the node) and
prints the pool as a table, or as JSON with -o json.

On a local VPC, --instance N (with --name for a VPC that is not the default)
reads the agent of that instance from the host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var dial func(ctx context.Context, network, address string) (net.Conn, error)
			if instance != "" {
				ctl, err := localvpc.Find(name)
				if err != nil {
					return err
				}
				in, err := ctl.Instance(instance)
				if err != nil {
					return err
				}
				nsPath := netops.NamedNSPath(in.Namespace)
				dial = func(ctx context.Context, network, address string) (c net.Conn, err error) {
					err = ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
						c, err = (&net.Dialer{}).DialContext(ctx, network, address)
						return err
					})
					return c, err
				}
			}
			r, err := node.FetchReport(cmd.Context(), addr, dial)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return r.Render(os.Stdout)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", node.DefaultIntrospectionAddr, "vpcnetd's introspection endpoint")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().StringVar(&instance, "instance", "", "on a local VPC: the instance (ID or 1, 2, ...) whose agent to read")
	cmd.Flags().StringVar(&name, "name", localvpc.DefaultName, "the local VPC, with --instance")
	return cmd
}
