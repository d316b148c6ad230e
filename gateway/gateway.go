// Package gateway composes the edge gateway: the HTTP routes, the WebSocket
// transport, a session per connection and the hub. It is given a broker (the
// bus) and never imports NATS itself; cmd/fabric does the wiring.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
	"github.com/fabric-rt/fabric/internal/broker"
)

// Config configures a Gateway.
type Config struct {
	Broker broker.Broker
	// WS tunes the WebSocket transport (sizes, timeouts, loops).
	WS ws.Config
	// MaxChannels caps joined channels per connection (default 100).
	MaxChannels int
	// LeaveGrace keeps a topic's subscription after its last member left
	// (default 2 s).
	LeaveGrace time.Duration
	// Home, when set, serves "/" (the demo page).
	Home   http.Handler
	Logger *slog.Logger
}

// Gateway is one edge gateway.
type Gateway struct {
	cfg  Config
	ws   *ws.Server
	hub  *hub.Hub
	sess session.Config
	mux  *http.ServeMux

	idPrefix string
	nextID   atomic.Uint64
}

// New builds a Gateway and starts its event loops.
func New(cfg Config) (*Gateway, error) {
	if cfg.Broker == nil {
		return nil, errors.New("gateway: no broker")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WS.Logger == nil {
		cfg.WS.Logger = cfg.Logger
	}
	wsrv, err := ws.New(cfg.WS)
	if err != nil {
		return nil, err
	}
	h := hub.New(hub.Config{Broker: cfg.Broker, LeaveGrace: cfg.LeaveGrace, Logger: cfg.Logger})
	g := &Gateway{
		cfg: cfg,
		ws:  wsrv,
		hub: h,
		sess: session.Config{
			Hub:         h,
			Broker:      cfg.Broker,
			MaxChannels: cfg.MaxChannels,
			Logger:      cfg.Logger,
		},
		mux:      http.NewServeMux(),
		idPrefix: randomID() + "-",
	}
	g.sess.SetDefaults()
	g.mux.HandleFunc("GET /socket/websocket", g.serveWebSocket)
	if cfg.Home != nil {
		g.mux.Handle("/", cfg.Home)
	}
	return g, nil
}

// Handler returns the client-facing HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.mux }

func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	v, err := phoenix.ParseVsn(r.URL.Query().Get("vsn"))
	if err != nil {
		// Refused before the upgrade: phoenix.js backs off on a failed
		// handshake, but reconnects at once after an accepted-then-closed one.
		http.Error(w, "unsupported vsn (want 1.0.0 or 2.0.0)", http.StatusBadRequest)
		return
	}
	err = g.ws.Upgrade(w, r, func(c transport.Conn) transport.Session {
		s := session.New(&g.sess, c, v, nil)
		s.SetIdentity(g.connID(), "")
		return s
	})
	if err != nil && !errors.Is(err, ws.ErrClosed) {
		g.cfg.Logger.Debug("websocket upgrade refused", "remote", r.RemoteAddr, "err", err)
	}
}

// connID names a connection: unique within the fleet in practice (a random
// process prefix) and cheap (a counter).
func (g *Gateway) connID() string {
	return g.idPrefix + strconv.FormatUint(g.nextID.Add(1), 36)
}

// Stats is a snapshot of gateway counters.
type Stats struct {
	Transport ws.Stats
	Hub       hub.Stats
}

// Stats returns a snapshot.
func (g *Gateway) Stats() Stats { return Stats{Transport: g.ws.Stats(), Hub: g.hub.Stats()} }

// Members returns the local member count of topic.
func (g *Gateway) Members(topic string) int { return g.hub.Members(topic) }

// Shutdown closes every connection with 1001 (waiting for close handshakes
// until ctx ends), then drops the hub's subscriptions. The HTTP server is
// the caller's: stop it first so no new upgrade arrives.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.ws.Shutdown(ctx)
	g.hub.Close()
	return err
}

func randomID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
