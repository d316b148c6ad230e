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
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/events"
	"github.com/fabric-rt/fabric/gateway/hooks"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/gateway/transport/longpoll"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
)

// PathWebSocket is the WebSocket endpoint (phoenix.js appends /websocket to
// the socket path "/socket").
const PathWebSocket = "/socket/websocket"

// Config configures a Gateway.
type Config struct {
	Broker broker.Broker
	// Namespaces is the namespace policy (gateway/namespace): which
	// namespaces keep history, route pushes, ask about joins, track
	// presence. nil: none does.
	Namespaces *namespace.Set
	// WS tunes the WebSocket transport (sizes, timeouts, loops).
	WS ws.Config
	// LongPoll tunes the LongPoll transport (its AllowOrigin is set from
	// AllowedOrigins).
	LongPoll longpoll.Config
	// Auth configures connection tokens; a nil Verifier is anonymous mode.
	Auth AuthConfig
	// AllowedOrigins is the Origin allow-list for upgrades and LongPoll
	// requests ("https://app.example.com", or "*"); empty allows any with
	// authentication, and only the same origin in anonymous mode.
	AllowedOrigins []string
	// Limits protect the gateway from one client or address.
	Limits Limits
	// MaxChannels caps joined channels per connection (default 100).
	MaxChannels int
	// LeaveGrace keeps a topic's subscription after its last member left
	// (default 2 s).
	LeaveGrace time.Duration
	// RingBudget and RingBytes bound the recent messages persistent
	// channels keep in memory (hub.Config; defaults there).
	RingBudget int64
	RingBytes  int
	// ID names this gateway in the cluster (presence, control); default
	// random, unique per process.
	ID string
	// Compression classes messages by namespace for WebSocket
	// compression (WS.Compression turns it on); nil: one class for all.
	Compression *Compressions
	// Hooks: connect and join hooks (hooks.go).
	Hooks HooksConfig
	// Home, when set, serves "/" (the demo page).
	Home   http.Handler
	Logger *slog.Logger
}

// Gateway is one edge gateway.
type Gateway struct {
	cfg   Config
	id    string // this gateway in the cluster (ID)
	ws    *ws.Server
	lp    *longpoll.Server
	hub   *hub.Hub
	pres  *presence.Tracker // nil when the broker carries no presence
	evq   *events.Queue     // nil when the broker carries no lifecycle events
	hooks *hooks.Hooks      // nil when no hook is on
	sess  session.Config
	mux   *http.ServeMux

	nextID atomic.Uint64

	open atomic.Int64 // admitted connections (both transports)
	// releaseOpen gives an admission back when no per-IP count is kept;
	// built once so that admitting allocates nothing for it.
	releaseOpen func()
	pending     atomic.Int64 // upgrades in progress
	perIP       ipCounter
	users       users
	authFails   failures
	accept      acceptBucket
	refused     refusals
	// Refusals are logged sampled (see sampledLog), one sampler per kind.
	logOrigin, logAuth, logUser sampledLog
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
	if cfg.Compression == nil {
		cfg.Compression = NewCompressions(nil)
	}
	cfg.WS.DefaultCompression = cfg.Compression.other
	wsrv, err := ws.New(cfg.WS)
	if err != nil {
		return nil, err
	}
	h := hub.New(hub.Config{Broker: cfg.Broker, Namespaces: cfg.Namespaces, LeaveGrace: cfg.LeaveGrace, Logger: cfg.Logger,
		RingBudget: cfg.RingBudget, RingBytes: cfg.RingBytes, Compression: cfg.Compression.For})
	if cfg.ID == "" {
		cfg.ID = randomID() + randomID()
	}
	g := &Gateway{
		cfg: cfg,
		id:  cfg.ID,
		ws:  wsrv,
		hub: h,
		sess: session.Config{
			Hub:            h,
			Broker:         cfg.Broker,
			Namespaces:     cfg.Namespaces,
			MaxChannels:    cfg.MaxChannels,
			JoinRate:       cfg.Limits.JoinRate,
			JoinBurst:      cfg.Limits.JoinBurst,
			PushRate:       cfg.Limits.PushRate,
			PushBurst:      cfg.Limits.PushBurst,
			PushBytesRate:  cfg.Limits.PushBytesRate,
			PushBytesBurst: cfg.Limits.PushBytesBurst,
			Logger:         cfg.Logger,
			IDPrefix:       randomID() + "-",
		},
		mux: http.NewServeMux(),
	}
	g.releaseOpen = func() { g.open.Add(-1) }
	if eb, ok := cfg.Broker.(broker.Events); ok {
		// Never emitted directly: see package events.
		g.evq = events.New(eb, 0)
		g.sess.Events = g.evq
	}
	if pb, ok := cfg.Broker.(broker.Presence); ok {
		// Presence for namespaces that enable it (see gateway/presence).
		g.pres = presence.New(presence.Config{Bus: pb, Namespaces: cfg.Namespaces, GatewayID: cfg.ID, Grace: cfg.LeaveGrace, Logger: cfg.Logger,
			MaxStateBytes: presenceStateCap(cfg)})
		g.sess.Presence = g.pres
	}
	g.newHooks()
	g.sess.SetDefaults()
	lpcfg := cfg.LongPoll
	if lpcfg.Logger == nil {
		lpcfg.Logger = cfg.Logger
	}
	lpcfg.AllowOrigin = g.originOK
	if cfg.Auth.Verifier != nil {
		lpcfg.Recheck = g.recheckLongPoll
	}
	g.lp = longpoll.New(lpcfg)
	g.mux.HandleFunc("GET "+PathWebSocket, g.serveWebSocket)
	g.mux.HandleFunc("/socket/longpoll", g.serveLongPoll)
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
		(&refusal{status: http.StatusBadRequest, reason: "unsupported_vsn"}).write(w)
		return
	}
	pol, claims, release, ref := g.admit(r, false)
	if ref != nil {
		ref.write(w)
		return
	}
	hc, ref := g.connectHook(r, pol, false)
	if ref != nil {
		release()
		ref.write(w)
		return
	}
	err = g.ws.Upgrade(w, r, func(c transport.Conn) transport.Session {
		return g.newSession(c, v, pol, claims, hc, release, false)
	})
	if err != nil {
		release()
		if !errors.Is(err, ws.ErrClosed) {
			g.cfg.Logger.Debug("websocket upgrade refused", "remote", r.RemoteAddr, "err", err)
		}
	}
}

// serveLongPoll runs the LongPoll transport; a new LongPoll session goes
// through the same admission as a WebSocket upgrade.
func (g *Gateway) serveLongPoll(w http.ResponseWriter, r *http.Request) {
	g.lp.Serve(w, r, func(r *http.Request) (func(transport.Conn) transport.Session, error) {
		v, err := phoenix.ParseVsn(r.URL.Query().Get("vsn"))
		if err != nil {
			return nil, err
		}
		pol, claims, release, ref := g.admit(r, true)
		if ref != nil {
			return nil, errRefused
		}
		hc, ref := g.connectHook(r, pol, true)
		if ref != nil {
			release()
			return nil, errRefused // LongPoll's refusal: 403 {"status":403}
		}
		return func(c transport.Conn) transport.Session {
			return g.newSession(c, v, pol, claims, hc, release, true)
		}, nil
	})
}

// recheckLongPoll binds a LongPoll session to its user: a poll or POST
// that presents a token (phoenix.js sends its params, and the authToken
// on polls, with every request) must present a valid connection token of
// the user who opened the session. One without any token rides on the
// session token alone, as phoenix.js's POSTs with authToken do.
func (g *Gateway) recheckLongPoll(r *http.Request, sess transport.Session) bool {
	s, ok := sess.(*session.Session)
	if !ok {
		return false
	}
	tok, err := auth.FromRequest(r, g.cfg.Auth.AllowQueryToken)
	if err != nil {
		return errors.Is(err, auth.ErrMissingToken)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	c, err := g.cfg.Auth.Verifier.Verify(ctx, tok)
	return err == nil && c.IsType(auth.TypeConnect) && c.Subject == s.Sub() && g.gateRefusal(c) == nil
}

// The session asks the policy for the connection's user.
var _ session.UserPolicy = (*policy)(nil)

// newSession builds the Phoenix session of an admitted connection.
func (g *Gateway) newSession(c transport.Conn, v phoenix.Version, pol *policy, claims *auth.Claims, hc *hookConn, release func(), textOnly bool) transport.Session {
	var p session.Policy
	if pol != nil {
		p = pol
	}
	s := session.New(&g.sess, c, v, p)
	if textOnly {
		s.SetTextOnly()
	}
	s.OnClose(release)
	if hc != nil {
		s.SetHookContext(hc.claims, hc.assigns)
	}
	s.SetIdentity(g.nextID.Add(1))
	if claims != nil && !claims.ExpiresAt.IsZero() {
		// A connection lives as long as its token: phoenix.js reconnects
		// with a fresh one through its params/authToken function.
		if e, ok := c.(transport.Expirer); ok {
			// A negative leeway means none (as for the verifier): added
			// as is, -1ns put the deadline, kept in whole seconds, a
			// second before exp.
			e.ExpireAt(claims.ExpiresAt.Add(max(g.cfg.Auth.Leeway, 0)), transport.CloseTokenExpired, "token expired")
		}
	}
	return s
}

// Stats is a snapshot of gateway counters.
type Stats struct {
	Transport ws.Stats
	LongPoll  longpoll.Stats
	Hub       hub.Stats
	Sessions  session.Stats
	// Refused counts connections refused before the upgrade, by cause:
	// "origin", "overload", "per_ip", "auth", "auth_rate" (a source over
	// its budget of bad credentials), "per_user", "accept_rate".
	Refused map[string]uint64
}

// Stats returns a snapshot.
func (g *Gateway) Stats() Stats {
	return Stats{Transport: g.ws.Stats(), LongPoll: g.lp.Stats(), Hub: g.hub.Stats(), Sessions: g.sess.Stats(), Refused: g.refused.snapshot()}
}

// Members returns the local member count of topic.
func (g *Gateway) Members(topic string) int { return g.hub.Members(topic) }

// Drain starts a graceful exit: new connections are refused (503), LongPoll
// sessions are told to go (their next poll gets 410), and WebSocket clients
// are closed with 1012 (service restart) in batches spread over window, so
// they reconnect to the other gateways as a trickle and resume there by
// offset. It returns once the last batch was closed or ctx ended.
func (g *Gateway) Drain(ctx context.Context, window time.Duration) {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	_ = g.lp.Shutdown(lctx) // only ctx's error: the drain goes on for WebSocket either way
	cancel()
	g.ws.Drain(ctx, window, transport.CloseServiceRestart)
}

// Shutdown closes every connection with 1001 (waiting for close handshakes
// until ctx ends), then drops the hub's subscriptions. The HTTP server is
// the caller's: stop it first so no new upgrade arrives.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := errors.Join(g.lp.Shutdown(ctx), g.ws.Shutdown(ctx))
	if g.pres != nil {
		// After the connections closed (their leaves are pending): flush
		// them and say bye, so other gateways drop us at once.
		g.pres.Close()
	}
	g.hub.Close()
	if g.evq != nil {
		g.evq.Close(time.Second)
	}
	return err
}

// EventsDropped is the number of lifecycle events dropped because their
// queue was full (the bus stuck or away).
func (g *Gateway) EventsDropped() uint64 {
	if g.evq == nil {
		return 0
	}
	return g.evq.Dropped()
}

func randomID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// presenceStateCap is half the smaller per-connection output budget
// (WebSocket queue, LongPoll buffer; 256 KiB each by default): a joiner's
// presence_state then never trips the slow-consumer bound by itself, and
// an operator who raises the budget raises the state cap with it.
func presenceStateCap(cfg Config) int {
	const transportDefault = 256 << 10
	budget := func(b int) int {
		if b <= 0 {
			return transportDefault
		}
		return b
	}
	return min(budget(cfg.WS.MaxQueueBytes), budget(cfg.LongPoll.MaxBuffered)) / 2
}
