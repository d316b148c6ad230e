package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/hooks"
	"github.com/fabric-rt/fabric/gateway/namespace"
)

// hooksConfig is the gateway's hook settings: the flags, and whether any
// namespace asks a service about its joins.
func hooksConfig(cfg Config, nss *namespace.Set) gateway.HooksConfig {
	return gateway.HooksConfig{Connect: cfg.ConnectHook, ConnectTimeout: cfg.ConnectHookTimeout, Concurrency: cfg.HookConcurrency,
		Joins: nss.HasJoinHooks()}
}

var (
	descHookRequests = prometheus.NewDesc("fabric_hook_requests_total",
		"Connect and join hook answers, by hook and outcome: ok, cached (an ok answer reused within its cache_ttl_ms), refused (by the service), no_handler, timeout, unavailable (NATS away), invalid_reply.",
		[]string{"hook", "outcome"}, nil)
	descHookLatency = prometheus.NewDesc("fabric_hook_latency_seconds",
		"Time a hook request took on the bus (answered, failed or abandoned), by hook; time waiting for a --hook-concurrency slot not included.",
		[]string{"hook"}, nil)
	descHookInFlight = prometheus.NewDesc("fabric_hook_requests_in_flight",
		"Hook requests sent and not yet answered (at most --hook-concurrency).", nil, nil)
	descHookInFlightMax = prometheus.NewDesc("fabric_hook_requests_in_flight_max",
		"The most hook requests ever in flight at once on this gateway.", nil, nil)
	descHookWaiting = prometheus.NewDesc("fabric_hook_requests_waiting",
		"Hook requests waiting for a --hook-concurrency slot.", nil, nil)
)

var hookDescs = []*prometheus.Desc{descHookRequests, descHookLatency, descHookInFlight, descHookInFlightMax, descHookWaiting}

// collectHooks reports the hooks' counters (nothing when no hook is on).
func (a *App) collectHooks(ch chan<- prometheus.Metric) {
	if a.gw == nil {
		return
	}
	st, ok := a.gw.HookStats()
	if !ok {
		return
	}
	for kind, outs := range st.Outcomes {
		for o, n := range outs {
			ch <- prometheus.MustNewConstMetric(descHookRequests, prometheus.CounterValue, float64(n), kind, o)
		}
	}
	for kind, l := range st.Latency {
		buckets := make(map[float64]uint64, len(hooks.LatencyBuckets))
		var cum uint64
		for i, le := range hooks.LatencyBuckets {
			cum += l.Counts[i]
			buckets[le.Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descHookLatency, l.Count(), l.Sum.Seconds(), buckets, kind)
	}
	ch <- prometheus.MustNewConstMetric(descHookInFlight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(descHookInFlightMax, prometheus.GaugeValue, float64(st.MaxInFlight))
	ch <- prometheus.MustNewConstMetric(descHookWaiting, prometheus.GaugeValue, float64(st.Waiting))
}
