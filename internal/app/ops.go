package app

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsHandler serves health, readiness, metrics and, with Config.Pprof,
// profiles. It lives on its own listener so it can stay private while the
// client port is public.
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.newRegistry(), promhttp.HandlerOpts{}))
	if !a.cfg.Pprof {
		return mux
	}
	// No /debug/pprof/cmdline: the command line holds whatever secrets
	// were passed as flags (--jwt-secret, --publish-api-keys). pprof.Index
	// answers that path with "unknown profile" (404).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (a *App) notReady() string {
	switch {
	case !a.ready.Load():
		return "starting or shutting down"
	case a.NATSErr() != nil:
		// The probe's view, not nc.Status(): nats.go reports a silent
		// link as connected for up to MaxPingsOut pings, and Status waits
		// on the lock it holds across each redial.
		return a.NATSErr().Error()
	}
	return ""
}
