package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus series, all named vpcnet_*. Each agent
// has its own registry so that tests can run several in one process.
type metrics struct {
	reg *prometheus.Registry

	addresses   *prometheus.GaugeVec // state: free, assigned, cooldown
	prefixes    prometheus.Gauge
	enis        prometheus.Gauge
	maxENIs     prometheus.Gauge
	maxPods     prometheus.Gauge
	ec2Calls    *prometheus.CounterVec // action, result (ok, error)
	ec2Errors   *prometheus.CounterVec // action, code
	ec2Latency  *prometheus.HistogramVec
	cniLatency  *prometheus.HistogramVec // verb: add, del, check, gc
	cniRequests *prometheus.CounterVec   // verb, result (ok, error)
	decisions   *prometheus.CounterVec   // action
	reconciles  prometheus.Counter
	addWaits    prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.addresses = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vpcnet_pool_addresses", Help: "Pod addresses on the node's ENIs by state (free, assigned, cooldown).",
	}, []string{"state"})
	m.prefixes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vpcnet_pool_prefixes", Help: "IPv4 /28 prefixes assigned to the node's ENIs.",
	})
	m.enis = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vpcnet_enis", Help: "ENIs attached to the node.",
	})
	m.maxENIs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vpcnet_enis_max", Help: "ENIs the node may attach (instance type and MAX_ENI).",
	})
	m.maxPods = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vpcnet_max_pods", Help: "Pods the node can address, as EKS computes max pods.",
	})
	m.ec2Calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcnet_ec2_calls_total", Help: "EC2 API calls made by the agent, by action and result.",
	}, []string{"action", "result"})
	m.ec2Errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcnet_ec2_errors_total", Help: "EC2 API errors by action and EC2 error code.",
	}, []string{"action", "code"})
	m.ec2Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vpcnet_ec2_latency_seconds", Help: "EC2 API call latency by action (SDK retries included).",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"action"})
	m.cniLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vpcnet_cni_latency_seconds", Help: "Latency of the CNI backend calls as the agent serves them.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"verb"})
	m.cniRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcnet_cni_requests_total", Help: "CNI backend calls by verb and result.",
	}, []string{"verb", "result"})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcnet_pool_decisions_total", Help: "Pool decisions carried out, by action.",
	}, []string{"action"})
	m.reconciles = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vpcnet_reconcile_runs_total", Help: "Full reconciliations against EC2.",
	})
	m.addWaits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vpcnet_add_waits_total", Help: "ADDs that found no free address and waited for the pool to grow.",
	})
	m.reg.MustRegister(m.addresses, m.prefixes, m.enis, m.maxENIs, m.maxPods, m.ec2Calls, m.ec2Errors,
		m.ec2Latency, m.cniLatency, m.cniRequests, m.decisions, m.reconciles, m.addWaits,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
