package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
	"github.com/fabric-rt/fabric/publisher"
)

// startListeners is Start's last phase: the client listener (WebSocket,
// LongPoll, the HTTP publish API, and the server API unless it has a
// listener of its own) and the ops listener.
func (a *App) startListeners(p plan) (err error) {
	cfg := a.cfg
	hsTimeout := cfg.HandshakeTimeout
	if hsTimeout <= 0 {
		hsTimeout = 5 * time.Second
	}
	a.httpLn, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	pub, err := publisher.New(a.nc, publisher.Config{Prefix: cfg.SubjectPrefix, Domain: cfg.HistoryDomain,
		// The namespaces are this gateway's own configuration: asking the
		// server instead takes "no answer" (JetStream or the history
		// home out of reach) for an ephemeral namespace, and a publish
		// nobody stores would be answered 200.
		Persistent: p.nss.Persistent})
	if err != nil {
		return err
	}
	a.pub = pub
	api, err := a.newServerAPI(cfg, p.verifier)
	if err != nil {
		return err
	}
	pubHandler, err := publisher.NewHandler(publisher.HandlerConfig{
		Publisher: pub,
		// The server API's credentials: API keys (--publish-api-keys
		// publish anywhere, --api-keys-file keys as scoped), publisher
		// JWTs; a client's connection token is refused (403).
		Authenticate: api.AuthenticatePublish,
		Authorize:    api.AuthorizePublish, // scopes and rate, per credential
		Available:    a.broker.Available,   // 503 at once while NATS is known to be away
		Logger:       a.log,
	})
	if err != nil {
		return err
	}
	a.pubAPI = pubHandler
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, pubHandler)
	mux.Handle(publisher.PathBatch, pubHandler)
	if cfg.APIListen == "" {
		api.Mount(mux)
	} else if err := a.startAPIListener(cfg, api, pubHandler); err != nil {
		return err
	}
	mux.Handle("/", a.gw.Handler())
	a.httpSrv = &http.Server{
		Handler:   mux,
		Protocols: h2c(), // gRPC clients of the server API speak HTTP/2 without TLS
		// Bounds the whole upgrade request, so slow-header clients
		// (slowloris) cannot hold handshakes open.
		ReadHeaderTimeout: hsTimeout,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10, // bigger headers get 431
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	// Upgrades skip net/http (see ws.SplitListener); the rest is served
	// by it as usual.
	split := ws.SplitListener(a.httpLn, gateway.PathWebSocket, mux, hsTimeout, a.log)
	go a.serve(a.httpSrv, split, "http")

	if cfg.OpsListen != "" && cfg.OpsListen != "off" {
		a.opsLn, err = net.Listen("tcp", cfg.OpsListen)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w", cfg.OpsListen, err)
		}
		a.opsSrv = &http.Server{Handler: a.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go a.serve(a.opsSrv, a.opsLn, "ops")
	}
	return nil
}
