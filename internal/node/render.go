package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// FetchReport reads an agent's Report from its introspection endpoint at
// addr (host:port). dial, when not nil, makes the connection (to reach an
// agent inside another network namespace).
func FetchReport(ctx context.Context, addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (Report, error) {
	tr := &http.Transport{DialContext: dial}
	if dial == nil {
		tr.DialContext = (&net.Dialer{}).DialContext
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	if err != nil {
		return Report{}, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return Report{}, fmt.Errorf("ask vpcnetd at %s (is it running on this node?): %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return Report{}, fmt.Errorf("vpcnetd at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
	}
	var r Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return Report{}, fmt.Errorf("decode vpcnetd's status from %s: %w", addr, err)
	}
	return r, nil
}

// Render writes the report for a person: the node, targets and limits, the
// pool's totals, each ENI, each address that is not free, the last
// decisions and EC2 errors.
func (r Report) Render(w io.Writer) error {
	state := "ready"
	if !r.Ready {
		state = "NOT READY: " + r.Reason
	}
	fmt.Fprintf(w, "node %s (%s, %s), primary %s on %s: %s\n", r.Node.InstanceID, r.Node.InstanceType, r.Node.Zone,
		r.Node.PrimaryIP, r.Node.PrimaryIface, state)
	t := r.Targets
	fmt.Fprintf(w, "targets WARM_ENI_TARGET=%d WARM_IP_TARGET=%d MINIMUM_IP_TARGET=%d WARM_PREFIX_TARGET=%d ENABLE_PREFIX_DELEGATION=%v MAX_ENI=%d IP_COOLDOWN_PERIOD=%s\n",
		t.WarmENITarget, t.WarmIPTarget, t.MinimumIPTarget, t.WarmPrefixTarget, t.PrefixDelegation, t.MaxENI, t.IPCooldown)
	fmt.Fprintf(w, "limits  %d ENIs x %d slots, max pods %d\n", r.Limits.ENIs, r.Limits.SlotsPerENI, r.Limits.MaxPods)
	fmt.Fprintf(w, "pool    %d addresses: %d free, %d assigned, %d cooldown; %d prefixes; %d ADDs waiting\n",
		r.Totals.Addresses, r.Totals.Free, r.Totals.Assigned, r.Totals.Cooldown, r.Totals.Prefixes, r.Waiting)
	if r.Blocked != "" {
		fmt.Fprintf(w, "growth  last attempt failed: %s\n", r.Blocked)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENI\tDEVICE\tSUBNET\tPRIMARY IP\tSECONDARY\tPREFIXES\tFREE\tASSIGNED\tCOOLDOWN\tOURS")
	for _, e := range r.ENIs {
		var free, assigned, cooling int
		for _, a := range e.Addresses {
			switch a.State {
			case "free":
				free++
			case "assigned":
				assigned++
			case "cooldown":
				cooling++
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%v\n", e.ID, e.DeviceIndex, e.SubnetID, e.PrimaryIP,
			len(e.Secondary), len(e.Prefixes), free, assigned, cooling, e.Ours)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tENI\tSTATE\tPOD\tCOOLDOWN UNTIL")
	for _, e := range r.ENIs {
		for _, a := range e.Addresses {
			if a.State == "free" || a.State == "node" {
				continue
			}
			until := ""
			if a.CooldownUntil != nil {
				until = a.CooldownUntil.Format(time.TimeOnly)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.IP, e.ID, a.State, a.Pod, until)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Decisions) > 0 {
		fmt.Fprintln(w, "\nlast decisions:")
		for _, d := range r.Decisions {
			line := fmt.Sprintf("  %s  %s (%s) took %s", d.At.Format(time.TimeOnly), d.Action, d.Reason, d.Took.Round(time.Millisecond))
			if d.Error != "" {
				line += ": FAILED: " + d.Error
			}
			fmt.Fprintln(w, line)
		}
	}
	if len(r.EC2Errors) > 0 {
		fmt.Fprintln(w, "\nlast EC2 errors:")
		for _, e := range r.EC2Errors {
			fmt.Fprintf(w, "  %s  %s %s: %s\n", e.At.Format(time.TimeOnly), e.Action, e.Code, e.Error)
		}
	}
	return nil
}
