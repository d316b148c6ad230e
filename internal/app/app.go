// Package app wires one Fabric process together: the embedded or external
// NATS connection, the broker adapter, the gateway, the client HTTP listener
// and the ops listener. cmd/fabric turns flags into a Config; end-to-end
// tests start the very same thing in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natsembed"
	"github.com/fabric-rt/fabric/nats/natslink"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

// Config is everything `fabric serve` can be told.
type Config struct {
	Listen    string // client HTTP: WebSocket, LongPoll, demo page
	OpsListen string // /healthz, /readyz, /metrics, /debug/pprof; "off" for none
	// NATSListen is the embedded server's client port ("off": in-process only).
	NATSListen string
	DataDir    string // the embedded server's JetStream store lives in DataDir/nats
	NATSURL    string // external NATS; when set no embedded server starts
	// Credentials and TLS for the external NATS (NATSURL only; setting any
	// of them without NATSURL is an error). User and password may also
	// be given in the URL (nats://user:pass@host:4222). Files are read at
	// Start: an unreadable one stops it.
	NATSCreds    string // credentials file (user JWT + NKey seed): nats.UserCredentials
	NATSNkey     string // NKey seed file: nats.NkeyOptionFromSeed
	NATSUser     string // with NATSPassword: nats.UserInfo
	NATSPassword string
	NATSToken    string // nats.Token
	NATSTLSCA    string // PEM CA file verifying the servers (implies TLS): nats.RootCAs
	NATSTLSCert  string // PEM client certificate for mutual TLS, with NATSTLSKey: nats.ClientCert
	NATSTLSKey   string
	// Embedded-server clustering (ignored with NATSURL): the embedded node
	// joins cluster ClusterName, listening for routes on ClusterListen and
	// dialling Routes (nats-route://host:port). See natsembed.Config.
	ClusterName   string
	ClusterListen string
	Routes        []string
	NATSName      string // embedded server name; default derived (natsembed)
	// NATSConfig is a nats-server configuration file for the embedded
	// server: its users, nkeys or accounts, route authorization, TLS (see
	// natsembed.Config.ConfigFile). The gateway then connects with its
	// own credentials from NATSCreds, NATSNkey, NATSUser/NATSPassword or
	// NATSToken, like a service. Any embedded listener off loopback needs
	// authentication (checkExposure).
	NATSConfig string
	// Regions (docs/regions.md, leaf.go): Leaf joins the embedded server
	// to a hub as a leaf node; JetStreamDomain is the embedded server's
	// domain (derived with a leaf when empty); HistoryDomain is the
	// JetStream domain the persistent namespaces' streams live in ("":
	// the JetStream of the server the gateway is connected to).
	Leaf            LeafConfig
	JetStreamDomain string
	HistoryDomain   string
	// AllowRemoteOps permits the ops listener, which has no
	// authentication, on a non-loopback address (a monitoring network
	// or a pod IP that only Prometheus reaches). Pprof serves
	// /debug/pprof on it; off by default because profiles show code
	// paths and memory contents to whoever reaches the port.
	AllowRemoteOps bool
	Pprof          bool
	// AllowAnonymous permits open (unauthenticated) joins on non-loopback
	// listeners. Without it, anonymous mode is loopback-only.
	AllowAnonymous bool
	SubjectPrefix  string
	// Namespaces is the namespace policy (gateway/namespace); nil means
	// namespace.Defaults() (room:* keeps history and tracks presence).
	Namespaces map[string]namespace.Namespace
	// Grants are patterns every authenticated user may join or publish to
	// ("user:{sub}"), from the namespaces config.
	Grants auth.Grants

	// Authentication. With none of JWTSecret, JWTPublicKeyFile, JWKSURL the
	// gateway runs anonymous (loopback only unless AllowAnonymous).
	JWTSecret        string
	JWTPublicKeyFile string
	JWKSURL          string
	JWTIssuer        string
	JWTAudience      string
	JWTLeeway        time.Duration
	AllowQueryToken  bool
	AllowedOrigins   []string
	// PublishAPIKeys authenticate POST /api/v1/publish (Authorization:
	// Bearer <key>), as do JWTs of type "publisher".
	PublishAPIKeys []string
	// Server API (docs/api.md). APIListen: its own listener (gRPC with h2c,
	// gRPC-Web, Connect, REST); empty: on the client listener. APIKeysFile:
	// scoped API keys (YAML). APIRate: requests per second per credential
	// (0: unlimited).
	APIListen   string
	APIKeysFile string
	APIRate     float64
	// Cluster and Moderator serve the cluster-wide and moderation RPCs;
	// nil: this process's (nats/natsctl over its NATS, and its
	// nats/natsbroker). Tests may put others in.
	Cluster   control.Cluster
	Moderator control.Moderator
	// LongPollSecret signs LongPoll session tokens; gateways behind one
	// load balancer share it. Empty: random per process.
	LongPollSecret string
	// LongPollWindow holds a poll this long (default 10 s);
	// LongPollIdleTimeout ends a session not polled for this long
	// (default 1.5 × the window).
	LongPollWindow, LongPollIdleTimeout time.Duration

	// Limits.
	MaxConnections       int
	MaxConnectionsPerIP  int
	MaxPendingHandshakes int
	// MaxAcceptRate admits at most this many new connections per second
	// once a burst of MaxAcceptBurst is spent (a token bucket); over it:
	// 503 + Retry-After. 0: off. MaxAcceptBurst 0 means the rate's size
	// (at least 1); fabric serve defaults it to 10,000 (docs/limits.md).
	MaxAcceptRate      float64
	MaxAcceptBurst     int
	JoinRate, PushRate float64
	// PushBytesRate bounds the payload bytes a connection pushes per second
	// (burst: 4 s worth, at least MaxMessageSize); 0: off.
	PushBytesRate float64
	// AuthFailureRate is how many bad credentials one source (IPv4
	// address, IPv6 /64) may present per second, burst twice that; past
	// it: 429 before verifying. 0: off.
	AuthFailureRate float64
	// Per user (the token's sub) on this gateway; 0: unlimited.
	MaxConnectionsPerUser int
	MaxLongPollPerUser    int
	MaxChannelsPerUser    int
	// HistoryMemory bounds the recent messages every persistent channel
	// keeps in memory for resumes, all channels together;
	// HistoryMemoryPerChannel bounds one channel's (defaults: hub's).
	HistoryMemory           int64
	HistoryMemoryPerChannel int

	// Compression offers WebSocket permessage-deflate; messages under
	// CompressionThreshold bytes go plain (docs/compression.md).
	Compression          bool
	CompressionThreshold int

	MaxMessageSize int
	IdleTimeout    time.Duration
	WriteTimeout   time.Duration
	MaxQueueBytes  int
	// MaxOutputBytes bounds the output queued for slow clients across the
	// process (transport.OutputBudget); 0: counted, never cut.
	MaxOutputBytes int64
	// SendBuffer is SO_SNDBUF for WebSocket sockets; 0: kernel autotuning.
	SendBuffer       int
	HandshakeTimeout time.Duration
	MaxChannels      int
	LeaveGrace       time.Duration
	// Liveness of the NATS link. NATSPingInterval and NATSMaxPingsOut are
	// nats.go's own: it drops and redials a connection after that many
	// unanswered pings (default 5 s × 2: 10–15 s). The probe is the
	// gateway's: a round trip every NATSProbeInterval that must answer
	// within NATSProbeTimeout; two failures in a row mark the link down
	// (/readyz 503, joins and pushes answered unavailable at once), by
	// default 4–6 s after it went silent. Zero: defaults.
	NATSPingInterval                    time.Duration
	NATSMaxPingsOut                     int
	NATSProbeInterval, NATSProbeTimeout time.Duration

	// ConnectHook asks a service on fabric_connect before accepting each
	// connection; HookConcurrency bounds the connect and join hook
	// requests in flight per gateway (docs/hooks.md).
	ConnectHook        bool
	ConnectHookTimeout time.Duration
	HookConcurrency    int

	// DrainWindow spreads the closing of client connections at shutdown
	// over this long (0: all at once).
	DrainWindow time.Duration

	// Home serves "/" on the client listener (the demo page).
	Home   http.Handler
	Logger *slog.Logger
	// Version labels fabric_build_info (cmd/fabric passes what `fabric
	// version` reports); empty: the module version from the build info.
	Version string
}

// App is a running Fabric process.
type App struct {
	cfg       Config
	output    *transport.OutputBudget // both transports' queued output
	log       *slog.Logger
	ns        *natsembed.Server
	nc        *nats.Conn
	broker    *natsbroker.Broker
	pub       *publisher.Publisher
	pubAPI    *publisher.Handler // for its response counts (metrics)
	gw        *gateway.Gateway
	compress  *gateway.Compressions // compression classes, for metrics
	httpSrv   *http.Server
	opsSrv    *http.Server
	apiSrv    *http.Server
	apiLn     net.Listener
	httpLn    net.Listener
	opsLn     net.Listener
	ctl       *controlPlane                    // cluster-wide control (control.go)
	link      atomic.Pointer[natslink.Monitor] // set once NATS is up; read by nats.go callbacks
	ready     atomic.Bool
	stopped   atomic.Bool
	anonymous bool
	// scavStop ends the storm scavenger (scavenge.go); scavDone is closed
	// when it has.
	scavStop, scavDone chan struct{}
}

// Start brings every part up and returns once clients can connect, phase
// by phase: check (a config that cannot work stops everything before
// anything starts, checks.go), dial (the NATS connection, dial.go), broker
// (the adapter, its streams and the link monitor, broker.go), gateway (and
// the cluster control plane, gateway.go), listeners (client HTTP, server
// API, ops; listeners.go). A phase that fails undoes the earlier ones.
func Start(cfg Config) (a *App, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = wire.DefaultPrefix
	}
	p, err := check(cfg)
	if err != nil {
		return nil, err
	}
	a = &App{cfg: cfg, log: cfg.Logger, anonymous: p.verifier == nil}
	started := a // `return nil, err` clears a before the deferred cleanup runs
	defer func() {
		if err != nil {
			started.close()
		}
	}()
	if err := a.startNATS(); err != nil {
		return nil, err
	}
	if err := a.startBroker(p.nss); err != nil {
		return nil, err
	}
	if err := a.startGateway(p); err != nil {
		return nil, err
	}
	if err := a.startListeners(p); err != nil {
		return nil, err
	}
	a.scavStop, a.scavDone = make(chan struct{}), make(chan struct{})
	go runScavenger(newScavenger(gatewayActivity(a.gw), freeOSMemory(a.log)), a.scavStop, a.scavDone)
	a.ready.Store(true)
	a.log.Info("fabric is serving",
		"listen", a.httpLn.Addr().String(),
		"ops", a.OpsAddr(),
		"nats", a.NATSURL(),
		"auth", map[bool]string{true: "anonymous", false: "jwt"}[a.anonymous])
	return a, nil
}

// HTTPAddr is the client listener's address.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }

// OpsAddr is the ops listener's address ("" when off).
func (a *App) OpsAddr() string {
	if a.opsLn == nil {
		return ""
	}
	return a.opsLn.Addr().String()
}

// NATSURL is where other processes reach this process's NATS ("" when the
// embedded server has no client port).
func (a *App) NATSURL() string {
	if a.cfg.NATSURL != "" {
		return RedactURLs(a.cfg.NATSURL)
	}
	if a.ns != nil {
		return a.ns.ClientURL()
	}
	return ""
}

// NATSConnected reports whether the NATS connection is up.
func (a *App) NATSConnected() bool { return a.nc != nil && a.nc.Status() == nats.CONNECTED }

// NATSErr is nil while the NATS link answers, else why it is known to be
// down (the probe's view, see natslink; it never blocks, unlike
// NATSConnected, which waits on nats.go's lock while it redials).
func (a *App) NATSErr() error {
	l := a.link.Load()
	if l == nil {
		return natslink.ErrDown
	}
	return l.Err()
}

// NATSDownSince is when the NATS link was declared down (zero while up).
func (a *App) NATSDownSince() time.Time {
	if l := a.link.Load(); l != nil {
		return l.DownSince()
	}
	return time.Time{}
}

// Gateway exposes the gateway (stats, member counts) to tests and ops.
func (a *App) Gateway() *gateway.Gateway { return a.gw }

// Embedded returns the embedded NATS server, nil with an external one.
func (a *App) Embedded() *natsembed.Server { return a.ns }

// Shutdown stops in order: readiness off, stop accepting, close sockets
// with 1001 (net/http does not close hijacked connections), drain NATS,
// stop the embedded server.
func (a *App) Shutdown(ctx context.Context) error {
	if a.stopped.Swap(true) {
		return nil
	}
	a.ready.Store(false)
	a.stopControl()
	if a.scavStop != nil {
		close(a.scavStop)
		<-a.scavDone
	}
	var errs []error
	if a.gw != nil && a.cfg.DrainWindow > 0 {
		a.log.Info("draining", "window", a.cfg.DrainWindow, "connections", a.gw.Stats().Transport.Open)
		a.gw.Drain(ctx, a.cfg.DrainWindow)
	}
	if a.httpSrv != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := a.httpSrv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
		cancel()
	}
	if a.gw != nil {
		if err := a.gw.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing connections: %w", err))
		}
	}
	if l := a.link.Load(); l != nil {
		l.Close()
	}
	if a.broker != nil {
		a.broker.Close()
	}
	if a.pub != nil {
		a.pub.Close()
	}
	if a.nc != nil {
		if err := a.nc.Drain(); err != nil {
			a.nc.Close()
		}
		for a.nc.IsDraining() && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		a.nc.Close()
	}
	if a.apiSrv != nil {
		a.apiSrv.Close()
	}
	if a.opsSrv != nil {
		a.opsSrv.Close()
	}
	if a.ns != nil {
		a.ns.Shutdown()
	}
	return errors.Join(errs...)
}

func (a *App) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// close undoes a failed start: the error that caused it is the one returned.
	_ = a.Shutdown(ctx)
}

// serve runs srv on ln until Shutdown; any other end is logged, as the
// listener failing leaves the process up but deaf.
func (a *App) serve(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("server stopped", "server", name, "err", err)
	}
}
