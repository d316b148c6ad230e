package app

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/url"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// opsHandler serves health, readiness, metrics and pprof. It lives on its
// own listener so it can stay private while the client port is public.
func (a *App) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := a.notReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /metrics", a.serveMetrics)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (a *App) notReady() string {
	switch {
	case !a.ready.Load():
		return "starting or shutting down"
	case a.nc == nil || a.nc.Status() != nats.CONNECTED:
		return "NATS not connected"
	}
	return ""
}

// serveMetrics writes the Prometheus text format by hand: a handful of
// counters do not justify a client library.
func (a *App) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	st := a.gw.Stats()
	metric := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	metric("fabric_connections", "gauge", "Open client connections.", st.Transport.Open)
	metric("fabric_channels", "gauge", "Topics with a NATS subscription on this gateway.", st.Hub.Channels)
	metric("fabric_longpoll_sessions", "gauge", "Open LongPoll sessions.", st.LongPoll.Sessions)
	metric("fabric_messages_delivered_total", "counter", "Messages handed to client connections.", st.Hub.Delivered)
	metric("fabric_messages_replayed_total", "counter", "Missed messages sent to resuming clients.", st.Hub.Replayed)
	metric("fabric_messages_unframeable_total", "counter", "Messages that could not be framed for clients.", st.Hub.EncodeErrors)
	metric("fabric_messages_dropped_total", "counter", "Bus messages dropped for an undeliverable event name.", a.broker.Dropped())
	metric("fabric_nats_slow_consumer_drops_total", "counter", "Messages NATS dropped on gateway subscriptions.", a.broker.SlowConsumerDrops())
	up := 0
	if a.nc != nil && a.nc.Status() == nats.CONNECTED {
		up = 1
	}
	metric("fabric_nats_connected", "gauge", "1 while the NATS connection is up.", up)
	fmt.Fprintf(w, "# HELP fabric_connections_refused_total Connections refused before the upgrade, by cause.\n# TYPE fabric_connections_refused_total counter\n")
	causes := make([]string, 0, len(st.Refused))
	for c := range st.Refused {
		causes = append(causes, c)
	}
	sort.Strings(causes)
	for _, c := range causes {
		fmt.Fprintf(w, "fabric_connections_refused_total{cause=%q} %d\n", c, st.Refused[c])
	}
	fmt.Fprintf(w, "# HELP fabric_connections_closed_total Client connections ended, by close code.\n# TYPE fabric_connections_closed_total counter\n")
	codes := make([]int, 0, len(st.Transport.Closes))
	for c := range st.Transport.Closes {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "fabric_connections_closed_total{code=\"%d\"} %d\n", c, st.Transport.Closes[closeCode(c)])
	}
}

// redactURL drops credentials from a NATS URL list before it is logged.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User("redacted")
	return u.String()
}

type closeCode = transport.CloseCode
