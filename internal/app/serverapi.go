package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/publisher"
	"github.com/fabric-rt/fabric/publisher/serverapi"
)

// The server API (docs/api.md): fabric.v1.ServerAPI as gRPC, gRPC-Web,
// Connect and REST. Without --api-listen it is on the client listener
// (HTTP/1.1, and HTTP/2 without TLS for gRPC: h2c); with it, on its own
// listener only, so a deployment can keep it off the public port. The
// REST publish paths stay on the client listener either way.

// newServerAPI builds the API from cfg. Cluster and Moderator default to
// this process's: the fleet reached over NATS (nats/natsctl, started by
// startControl before) and the broker's moderation of its streams.
func (a *App) newServerAPI(cfg Config, verifier *auth.Verifier) (*serverapi.Server, error) {
	if cfg.Cluster == nil {
		cfg.Cluster = a.Cluster()
	}
	if cfg.Moderator == nil && a.broker != nil {
		cfg.Moderator = a.broker
	}
	var keys []serverapi.KeySpec
	if cfg.APIKeysFile != "" {
		var err error
		if keys, err = serverapi.LoadKeys(cfg.APIKeysFile); err != nil {
			return nil, err
		}
	}
	cc := serverapi.CredentialsConfig{Keys: keys, PublishKeys: cfg.PublishAPIKeys, Rate: cfg.APIRate,
		Open: verifier == nil}
	if verifier != nil { // a nil *Verifier in the interface would not be nil
		cc.JWT = verifier
	}
	creds, err := serverapi.NewCredentials(cc)
	if err != nil {
		return nil, err
	}
	return serverapi.New(serverapi.Config{
		Publisher:   a.pub,
		Credentials: creds,
		History:     a.broker,
		Cluster:     cfg.Cluster,
		Moderator:   cfg.Moderator,
		Audit:       serverapi.NewAuditor(a.nc, cfg.SubjectPrefix, a.log),
		Available:   a.broker.Available,
		Logger:      a.log,
	})
}

// h2c lets one listener speak HTTP/1.1 and HTTP/2 without TLS (gRPC's
// prior-knowledge connections).
func h2c() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

// startAPIListener serves api and the REST publish paths on cfg.APIListen.
func (a *App) startAPIListener(cfg Config, api *serverapi.Server, pubHandler http.Handler) error {
	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.APIListen, err)
	}
	a.apiLn = ln
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, pubHandler)
	mux.Handle(publisher.PathBatch, pubHandler)
	api.Mount(mux)
	a.apiSrv = &http.Server{
		Handler:           mux,
		Protocols:         h2c(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go a.serve(a.apiSrv, ln, "api")
	return nil
}

// APIAddr is the server API's own listener address, "" when it shares the
// client listener.
func (a *App) APIAddr() string {
	if a.apiLn == nil {
		return ""
	}
	return a.apiLn.Addr().String()
}
