package node

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Report is the agent's state as the introspection endpoint serves it
// (GET /v1/status) and `vpcnet node status` renders it.
type Report struct {
	Node    Identity      `json:"node"`
	Limits  ReportLimits  `json:"limits"`
	Targets ReportTargets `json:"targets"`
	Ready   bool          `json:"ready"`
	Reason  string        `json:"reason,omitempty"`
	Blocked string        `json:"blocked,omitempty"`
	Waiting int           `json:"waitingAdds"`
	Totals  ReportTotals  `json:"totals"`
	ENIs    []ReportENI   `json:"enis"`
	// PendingENIs are attached in EC2 but carry no pods: attaching,
	// detaching, or their device has not shown up.
	PendingENIs []ENI            `json:"pendingENIs,omitempty"`
	Decisions   []DecisionRecord `json:"decisions"`
	EC2Errors   []EC2ErrorRecord `json:"ec2Errors"`
}

// ReportLimits is what the instance type allows.
type ReportLimits struct {
	InstanceType string `json:"instanceType"`
	ENIs         int    `json:"enis"`
	SlotsPerENI  int    `json:"slotsPerENI"`
	Prefixes     bool   `json:"prefixDelegation"`
	MaxPods      int    `json:"maxPods"`
}

// ReportTargets are the pool targets in aws-node's names.
type ReportTargets struct {
	WarmENITarget    int    `json:"WARM_ENI_TARGET"`
	WarmIPTarget     int    `json:"WARM_IP_TARGET"`
	MinimumIPTarget  int    `json:"MINIMUM_IP_TARGET"`
	WarmPrefixTarget int    `json:"WARM_PREFIX_TARGET"`
	PrefixDelegation bool   `json:"ENABLE_PREFIX_DELEGATION"`
	MaxENI           int    `json:"MAX_ENI"`
	IPCooldown       string `json:"IP_COOLDOWN_PERIOD"`
	CustomNetworking bool   `json:"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"`
	ExternalSNAT     bool   `json:"AWS_VPC_K8S_CNI_EXTERNALSNAT"`
}

// ReportTotals counts the node's pod addresses.
type ReportTotals struct {
	Addresses int `json:"addresses"`
	Free      int `json:"free"`
	Assigned  int `json:"assigned"`
	Cooldown  int `json:"cooldown"`
	Prefixes  int `json:"prefixes"`
}

// ReportENI is one ENI with its addresses.
type ReportENI struct {
	ENI
	Addresses []ReportAddress `json:"addresses"`
}

// ReportAddress is one pod address: free, assigned (to which pod) or in
// cooldown (until when).
type ReportAddress struct {
	IP            netip.Addr `json:"ip"`
	State         string     `json:"state"`
	Pod           string     `json:"pod,omitempty"`
	Attachment    string     `json:"attachment,omitempty"`
	CooldownUntil *time.Time `json:"cooldownUntil,omitempty"`
}

// Report snapshots the agent.
func (a *Agent) Report() Report {
	ready, reason, _, _ := a.Status()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	r := Report{
		Node:   a.id,
		Ready:  ready,
		Reason: reason,
		Limits: ReportLimits{InstanceType: a.id.InstanceType, ENIs: a.limits.ENIs, SlotsPerENI: a.limits.SlotsPerENI,
			Prefixes: a.limits.Prefixes, MaxPods: a.limits.MaxPods},
		Targets: ReportTargets{WarmENITarget: a.cfg.Pool.WarmENITarget, WarmIPTarget: a.cfg.Pool.WarmIPTarget,
			MinimumIPTarget: a.cfg.Pool.MinimumIPTarget, WarmPrefixTarget: a.cfg.Pool.WarmPrefixTarget,
			PrefixDelegation: a.cfg.Pool.PrefixDelegation, MaxENI: a.cfg.Pool.MaxENI, IPCooldown: a.cfg.Pool.IPCooldown.String(),
			CustomNetworking: a.cfg.Pool.CustomNetworking, ExternalSNAT: a.cfg.Pool.ExternalSNAT},
		Waiting:   a.waiting,
		Decisions: append([]DecisionRecord(nil), a.history...),
		EC2Errors: append([]EC2ErrorRecord(nil), a.lastErrs...),
	}
	if a.softBlock != nil {
		r.Blocked = a.softBlock.Error()
	}
	pods := map[Key]string{}
	if all, err := a.store.Assignments(); err == nil {
		for _, as := range all {
			pods[as.Key] = as.PodNamespace + "/" + as.PodName
		}
	}
	for _, e := range sortedENIs(a.enis) {
		re := ReportENI{ENI: *e}
		re.MACString = e.MAC.String()
		r.Totals.Prefixes += len(e.Prefixes)
		for _, ad := range e.PodAddresses() {
			ra := ReportAddress{IP: ad}
			st, until := a.addrStateLocked(ad, now)
			switch st {
			case "assigned":
				k := a.assigned[ad]
				ra.State, ra.Pod, ra.Attachment = "assigned", pods[k], k.String()
				r.Totals.Assigned++
			case "cooldown":
				until = until.UTC()
				ra.State, ra.CooldownUntil = "cooldown", &until
				r.Totals.Cooldown++
			default:
				if a.cfg.Pool.CustomNetworking && e.Primary {
					ra.State = "node"
				} else {
					ra.State = "free"
					r.Totals.Free++
				}
			}
			if ra.State != "node" {
				r.Totals.Addresses++
			}
			re.Addresses = append(re.Addresses, ra)
		}
		r.ENIs = append(r.ENIs, re)
	}
	for _, p := range a.pending {
		r.PendingENIs = append(r.PendingENIs, *p.ENI)
	}
	return r
}

// introspectionHandler serves /v1/status (the Report as JSON) and
// /healthz.
func (a *Agent) introspectionHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Report())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if ready, reason, _, _ := a.Status(); !ready && !a.isReady() {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func (a *Agent) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	return mux
}

// updateGauges refreshes the pool gauges from a snapshot.
func (a *Agent) updateGauges() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	st := a.poolStateLocked(now).Stats(now)
	a.m.addresses.WithLabelValues("free").Set(float64(st.Free))
	a.m.addresses.WithLabelValues("assigned").Set(float64(st.Assigned))
	a.m.addresses.WithLabelValues("cooldown").Set(float64(st.Cooling))
	prefixes := 0
	for _, e := range a.enis {
		prefixes += len(e.Prefixes)
	}
	a.m.prefixes.Set(float64(prefixes))
	a.m.enis.Set(float64(len(a.enis)))
	a.m.maxENIs.Set(float64(a.limits.ENIs))
	a.m.maxPods.Set(float64(a.limits.MaxPods))
}
