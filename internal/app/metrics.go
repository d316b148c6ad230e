package app

import (
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// newRegistry builds the private registry /metrics serves: Go runtime and
// process collectors, fabric_build_info, and the gateway's own counters,
// which are read from Stats() at scrape time rather than kept twice.
func (a *App) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "fabric_build_info",
			Help:        "Always 1; labels carry the build's module version and Go version.",
			ConstLabels: prometheus.Labels{"version": a.buildVersion(), "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		&fabricCollector{a: a},
	)
	return reg
}

// buildVersion is Config.Version (what `fabric version` reports, as
// cmd/fabric passes it), else the main module's version as recorded by the
// toolchain ("(devel)" for a plain source build).
func (a *App) buildVersion() string {
	if a.cfg.Version != "" {
		return a.cfg.Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

var (
	descConnections = prometheus.NewDesc("fabric_connections",
		"Open client connections, by transport.", []string{"transport"}, nil)
	descChannels = prometheus.NewDesc("fabric_channels",
		"Topics with a NATS subscription on this gateway.", nil, nil)
	descHistoryMemory = prometheus.NewDesc("fabric_history_memory_bytes",
		"Recent messages persistent channels keep in memory for resumes (payload, frames and overhead), all channels together; bounded by --history-memory.", nil, nil)
	descLongPollSessions = prometheus.NewDesc("fabric_longpoll_sessions",
		"Open LongPoll sessions.", nil, nil)
	descDelivered = prometheus.NewDesc("fabric_messages_delivered_total",
		"Messages handed to client connections.", nil, nil)
	descReplayed = prometheus.NewDesc("fabric_messages_replayed_total",
		"Missed messages sent to resuming clients.", nil, nil)
	descUnframeable = prometheus.NewDesc("fabric_messages_unframeable_total",
		"Messages that could not be framed for clients.", nil, nil)
	descDropped = prometheus.NewDesc("fabric_messages_dropped_total",
		"Bus messages dropped before delivery, by reason.", []string{"reason"}, nil)
	descClosed = prometheus.NewDesc("fabric_connections_closed_total",
		"Client connections ended, by transport and close code.", []string{"transport", "code"}, nil)
	descRefused = prometheus.NewDesc("fabric_connections_refused_total",
		"Connections refused before the upgrade, by cause.", []string{"cause"}, nil)
	descLongPollResults = prometheus.NewDesc("fabric_longpoll_sessions_total",
		"LongPoll session events, by result.", []string{"result"}, nil)
	descNATSConnected = prometheus.NewDesc("fabric_nats_connected",
		"1 while the NATS link answers the gateway's probe (a round trip every --nats-probe-interval); 0 from the second failed probe in a row, or a disconnect.", nil, nil)
	descNATSProbes = prometheus.NewDesc("fabric_nats_probes_total",
		"Round trips the gateway sent to NATS to check its link, by result (failed: error or no answer within --nats-probe-timeout).", []string{"result"}, nil)
	descNATSDowns = prometheus.NewDesc("fabric_nats_link_down_total",
		"Times the NATS link was declared down.", nil, nil)
	descJoins = prometheus.NewDesc("fabric_joins_total",
		"Channel join attempts, by result: ok, invalid, unauthorized, rate_limited, too_many_channels, user_budget, error, canceled, hook_refused.",
		[]string{"result"}, nil)
	descPushesRefused = prometheus.NewDesc("fabric_pushes_refused_total",
		"Client pushes answered with an error, by the reply's reason (reserved_event, invalid_event, too_large, unauthorized, rate_limited, ...). Refused pushes are logged only at a sampled rate.",
		[]string{"reason"}, nil)
	descPushesLimited = prometheus.NewDesc("fabric_pushes_rate_limited_total",
		"Client pushes answered rate_limited, by the limit they met: count (--push-rate) or bytes (--push-bytes-rate).", []string{"limit"}, nil)
	descResumes = prometheus.NewDesc("fabric_resumes_total",
		"Joins with a position to resume from, by outcome: recovered, or the reason history could not continue.",
		[]string{"recovered", "reason"}, nil)
	descNATSSubs = prometheus.NewDesc("fabric_nats_subscriptions",
		"Subscriptions on the gateway's NATS connection: channels, presence, stream advisories, the request inbox.", nil, nil)
	descLiveWildcard = prometheus.NewDesc("fabric_live_wildcard_namespaces",
		"Persistent namespaces whose live messages reach this gateway through one wildcard subscription rather than one per channel.", nil, nil)
	descReceived = prometheus.NewDesc("fabric_messages_received_total",
		"Bus messages handed to the hub for fan-out (one per message per channel).", nil, nil)
	descFanout = prometheus.NewDesc("fabric_fanout_latency_seconds",
		"Time from publishing a message to the gateway handing it to every local member's connection; messages without a publish time are not observed.",
		nil, nil)
	descPublishRequests = prometheus.NewDesc("fabric_publish_requests_total",
		"HTTP publish API requests (/api/v1/publish and /batch), by response status.", []string{"code"}, nil)
	descEventsDropped = prometheus.NewDesc("fabric_lifecycle_events_dropped_total",
		"Connection lifecycle events (fabric_events.*) dropped because their queue was full while NATS was stuck or away; they are best effort.", nil, nil)
	descCompressed = prometheus.NewDesc("fabric_compression_bytes_total",
		"Bytes of WebSocket messages compressed (once per message, however many members get it), before and after compression, by namespace (* for namespaces not configured).",
		[]string{"namespace", "stage"}, nil)
	descOutputQueued = prometheus.NewDesc("fabric_output_queued_bytes",
		"Output queued for clients that stopped reading (WebSocket sockets that refused bytes, LongPoll buffers), all connections together, each frame counted once per connection holding it; bounded by --max-output-bytes.", nil, nil)
	descOutputCuts = prometheus.NewDesc("fabric_output_budget_cuts_total",
		"Connections closed as slow consumers (4008) because the process's queued output went over --max-output-bytes.", nil, nil)
	descDraining = prometheus.NewDesc("fabric_draining",
		"1 from the moment shutdown began (readiness off, clients being closed) until the process exits.", nil, nil)
)

// fabricCollector reports one consistent Stats() snapshot per scrape.
type fabricCollector struct{ a *App }

func (c *fabricCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descConnections, descChannels, descHistoryMemory, descLongPollSessions, descDelivered,
		descReplayed, descUnframeable, descDropped, descClosed, descRefused,
		descLongPollResults, descNATSConnected, descJoins, descPushesRefused, descPushesLimited, descResumes, descNATSSubs, descLiveWildcard,
		descReceived, descFanout, descPublishRequests, descDraining, descEventsDropped,
		descNATSProbes, descNATSDowns, descCompressed, descOutputQueued, descOutputCuts,
	} {
		ch <- d
	}
	for _, d := range hookDescs {
		ch <- d
	}
}

func (c *fabricCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	up := 0.0
	if a.NATSErr() == nil {
		up = 1
	}
	gauge(descNATSConnected, up)
	if l := a.link.Load(); l != nil {
		st := l.Stats()
		counter(descNATSProbes, st.Probes-st.Failed, "ok")
		counter(descNATSProbes, st.Failed, "failed")
		counter(descNATSDowns, st.Downs)
	}
	if a.nc != nil {
		// The connection's own count, not the broker's: it is what the
		// server holds for this gateway, the publisher's and nats.go's
		// request inbox included (fabric_channels counts the channels).
		gauge(descNATSSubs, float64(a.nc.NumSubscriptions()))
	}
	draining := 0.0
	if a.stopped.Load() {
		draining = 1
	}
	gauge(descDraining, draining)
	if a.pubAPI != nil {
		for code, n := range a.pubAPI.Responses() {
			counter(descPublishRequests, n, strconv.Itoa(code))
		}
	}
	if a.broker != nil {
		counter(descDropped, a.broker.Dropped(), "event_name")
		counter(descDropped, a.broker.SlowConsumerDrops(), "nats_slow_consumer")
		gauge(descLiveWildcard, float64(a.broker.WildcardNamespaces()))
	}
	if a.gw == nil {
		return
	}
	counter(descEventsDropped, a.gw.EventsDropped())
	if a.output != nil {
		gauge(descOutputQueued, float64(a.output.Used()))
		counter(descOutputCuts, a.output.Cuts())
	}
	for _, k := range a.compress.All() {
		before, after := k.Bytes()
		counter(descCompressed, before, k.Name, "before")
		counter(descCompressed, after, k.Name, "after")
	}
	a.collectHooks(ch)
	st := a.gw.Stats()
	gauge(descConnections, float64(st.Transport.Open), "websocket")
	gauge(descConnections, float64(st.LongPoll.Sessions), "longpoll")
	gauge(descChannels, float64(st.Hub.Channels))
	gauge(descHistoryMemory, float64(st.Hub.RingBytes))
	gauge(descLongPollSessions, float64(st.LongPoll.Sessions))
	counter(descReceived, st.Hub.Received)
	counter(descDelivered, st.Hub.Delivered)
	for result, n := range st.Sessions.Joins {
		counter(descJoins, n, result)
	}
	for reason, n := range st.Sessions.PushesRefused {
		counter(descPushesRefused, n, reason)
	}
	for limit, n := range st.Sessions.PushesLimited {
		counter(descPushesLimited, n, limit)
	}
	for reason, n := range st.Hub.Resumes {
		recovered := "false"
		if reason == "" {
			recovered = "true"
		}
		counter(descResumes, n, recovered, reason)
	}
	ch <- fanoutHistogram(st.Hub.Fanout)
	counter(descReplayed, st.Hub.Replayed)
	counter(descUnframeable, st.Hub.EncodeErrors)
	for cause, n := range st.Refused {
		counter(descRefused, n, cause)
	}
	closes := func(tr string, m map[transport.CloseCode]uint64) {
		for code, n := range m {
			counter(descClosed, n, tr, strconv.Itoa(int(code)))
		}
	}
	closes("websocket", st.Transport.Closes)
	closes("longpoll", st.LongPoll.Closes)
	lp := st.LongPoll
	counter(descLongPollResults, lp.Opened, "opened")
	counter(descLongPollResults, lp.Refused, "refused")
	counter(descLongPollResults, lp.Gone, "gone")
	counter(descLongPollResults, lp.IdleExpired, "idle_expired")
	counter(descLongPollResults, lp.Overflows, "overflow")
	counter(descLongPollResults, lp.Forbidden, "forbidden")
}

// fanoutHistogram turns the hub's histogram (per-bucket counts) into
// Prometheus's (cumulative counts, seconds).
func fanoutHistogram(l hub.Latency) prometheus.Metric {
	buckets := make(map[float64]uint64, len(hub.FanoutBuckets))
	var cum uint64
	for i, le := range hub.FanoutBuckets {
		cum += l.Counts[i]
		buckets[le.Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(descFanout, l.Count(), l.Sum.Seconds(), buckets)
}
