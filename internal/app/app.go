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
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/gateway/transport/longpoll"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
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
	// Namespaces configures persistent namespaces; nil means
	// natsbroker.DefaultNamespaces() (room:* keeps history).
	Namespaces map[string]natsbroker.Namespace
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
	// (a token bucket with a burst of the same size, at least 1); over
	// it: 503 + Retry-After. 0: off.
	MaxAcceptRate      float64
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
}

// ErrOpenOnNetwork is returned when anonymous mode would be reachable from
// the network.
var ErrOpenOnNetwork = errors.New("refusing to start without authentication on a non-loopback address")

// Start brings every part up and returns once clients can connect.
func Start(cfg Config) (a *App, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = wire.DefaultPrefix
	}
	verifier, err := newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	if verifier == nil {
		if err := checkAnonymous(cfg); err != nil {
			return nil, err
		}
	}
	if err := checkExposure(cfg); err != nil {
		return nil, err
	}
	if err := checkRegions(cfg); err != nil {
		return nil, err
	}
	a = &App{cfg: cfg, log: cfg.Logger, anonymous: verifier == nil}
	started := a // `return nil, err` clears a before the deferred cleanup runs
	defer func() {
		if err != nil {
			started.close()
		}
	}()

	if err := a.startNATS(); err != nil {
		return nil, err
	}
	nss := cfg.Namespaces
	if nss == nil {
		nss = natsbroker.DefaultNamespaces()
	}
	a.broker, err = natsbroker.New(a.nc, natsbroker.Config{Prefix: cfg.SubjectPrefix, Logger: a.log, Namespaces: nss, Domain: cfg.HistoryDomain})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = a.broker.EnsureStreams(sctx)
	cancel()
	if err != nil {
		return nil, err
	}
	var streams []string
	for name, ns := range nss {
		if ns.History {
			streams = append(streams, wire.StreamName(name))
		}
	}
	link, err := natslink.New(natslink.Config{
		Conn: a.nc, Interval: cfg.NATSProbeInterval, Timeout: cfg.NATSProbeTimeout,
		Streams: streams, Domain: cfg.HistoryDomain, Logger: a.log,
		// A stream that was out of reach (its home region cut off)
		// stored messages the live feed never brought: catch up.
		OnStreamUp: func(stream string) {
			if b := a.broker; b != nil {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					b.ResyncStream(ctx, stream)
				}()
			}
		},
		OnChange: func(up bool) {
			// Back after a silence that nats.go did not notice (no
			// reconnect, so no resync from its handler): catch the
			// channels up all the same.
			if b := a.broker; up && b != nil {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					b.Resync(ctx)
				}()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	a.link.Store(link)
	a.broker.SetLink(link)
	if err := a.openRevocations(); err != nil {
		return nil, err
	}
	a.output = transport.NewOutputBudget(cfg.MaxOutputBytes)
	a.gw, err = gateway.New(gateway.Config{
		Broker: a.broker,
		WS: ws.Config{
			MaxMessageSize:   cfg.MaxMessageSize,
			IdleTimeout:      cfg.IdleTimeout,
			WriteTimeout:     cfg.WriteTimeout,
			MaxQueueBytes:    cfg.MaxQueueBytes,
			Budget:           a.output,
			SendBuffer:       cfg.SendBuffer,
			HandshakeTimeout: cfg.HandshakeTimeout,
			Compression:      cfg.Compression,
			CompressMin:      cfg.CompressionThreshold,
		},
		LongPoll: longpoll.Config{Secret: []byte(cfg.LongPollSecret), PollWindow: cfg.LongPollWindow, IdleTimeout: cfg.LongPollIdleTimeout,
			Gzip: cfg.Compression, GzipMin: cfg.CompressionThreshold, Budget: a.output},
		Auth: gateway.AuthConfig{
			Verifier:        verifier,
			AllowQueryToken: cfg.AllowQueryToken,
			Grants:          cfg.Grants,
			Leeway:          cfg.JWTLeeway,
			Gate:            a.gate(verifier != nil),
		},
		Compression:    a.compressions(nss),
		AllowedOrigins: cfg.AllowedOrigins,
		Limits: gateway.Limits{
			MaxConnections:        cfg.MaxConnections,
			MaxConnectionsPerIP:   cfg.MaxConnectionsPerIP,
			MaxPendingHandshakes:  cfg.MaxPendingHandshakes,
			AcceptRate:            cfg.MaxAcceptRate,
			AcceptBurst:           int(max(1, cfg.MaxAcceptRate)),
			JoinRate:              cfg.JoinRate,
			JoinBurst:             int(max(1, 2*cfg.JoinRate)),
			PushRate:              cfg.PushRate,
			PushBurst:             int(max(1, 2*cfg.PushRate)),
			PushBytesRate:         cfg.PushBytesRate,
			PushBytesBurst:        max(int(4*cfg.PushBytesRate), cfg.MaxMessageSize),
			AuthFailureRate:       cfg.AuthFailureRate,
			AuthFailureBurst:      int(max(1, 2*cfg.AuthFailureRate)),
			MaxConnectionsPerUser: cfg.MaxConnectionsPerUser,
			MaxLongPollPerUser:    cfg.MaxLongPollPerUser,
			MaxChannelsPerUser:    cfg.MaxChannelsPerUser,
		},
		Hooks:       hooksConfig(cfg, nss),
		RingBudget:  cfg.HistoryMemory,
		RingBytes:   cfg.HistoryMemoryPerChannel,
		MaxChannels: cfg.MaxChannels,
		LeaveGrace:  cfg.LeaveGrace,
		Home:        cfg.Home,
		Logger:      a.log,
	})
	if err != nil {
		return nil, err
	}
	if err := a.startControl(); err != nil {
		return nil, err
	}

	hsTimeout := cfg.HandshakeTimeout
	if hsTimeout <= 0 {
		hsTimeout = 5 * time.Second
	}
	a.httpLn, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	pub, err := publisher.New(a.nc, publisher.Config{Prefix: cfg.SubjectPrefix, Domain: cfg.HistoryDomain,
		// The namespaces are this gateway's own configuration: asking the
		// server instead takes "no answer" (JetStream or the history
		// home out of reach) for an ephemeral namespace, and a publish
		// nobody stores would be answered 200.
		Persistent: a.broker.Persistent})
	if err != nil {
		return nil, err
	}
	a.pub = pub
	api, err := a.newServerAPI(cfg, verifier)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	a.pubAPI = pubHandler
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, pubHandler)
	mux.Handle(publisher.PathBatch, pubHandler)
	if cfg.APIListen == "" {
		api.Mount(mux)
	} else if err := a.startAPIListener(cfg, api, pubHandler); err != nil {
		return nil, err
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
			return nil, fmt.Errorf("cannot listen on %s: %w", cfg.OpsListen, err)
		}
		a.opsSrv = &http.Server{Handler: a.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go a.serve(a.opsSrv, a.opsLn, "ops")
	}
	a.ready.Store(true)
	a.log.Info("fabric is serving",
		"listen", a.httpLn.Addr().String(),
		"ops", a.OpsAddr(),
		"nats", a.NATSURL(),
		"auth", map[bool]string{true: "anonymous", false: "jwt"}[a.anonymous])
	return a, nil
}

func (a *App) startNATS() error {
	cfg := a.cfg
	opts := []nats.Option{
		nats.Name("fabric-gateway"),
		nats.MaxReconnects(-1), // a gateway never gives up on its bus
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.PingInterval(durationOr(cfg.NATSPingInterval, 5*time.Second)),
		nats.MaxPingsOutstanding(intOr(cfg.NATSMaxPingsOut, 2)),
		// No reconnect buffer: while disconnected a core publish (a
		// client push to an ephemeral channel, a lifecycle event, the
		// HTTP API's ephemeral publishes) fails at once with
		// nats.ErrReconnectBufExceeded instead of being queued and sent
		// long after its caller was told it failed. JetStream publishes
		// fail the same way; subscriptions are unaffected (nats.go
		// re-sends them on reconnect).
		nats.ReconnectBufSize(-1),
		// nats.go writes to the socket holding its connection lock, with
		// a 1 minute deadline by default. On a silent link the socket
		// buffer fills within seconds and every call into nats.go (a
		// publish, a probe) then waits behind that write: give up on the
		// connection after 2 s instead and redial.
		nats.FlusherTimeout(2 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // our own Close/Drain at shutdown
			}
			a.log.Warn("NATS disconnected", "err", err)
			if l := a.link.Load(); l != nil {
				l.Disconnected(err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			a.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
			if l := a.link.Load(); l != nil {
				l.Reconnected()
			}
			// Live messages published while we were away are only in
			// the streams: catch every active channel up.
			if b := a.broker; b != nil {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					b.Resync(ctx)
				}()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			a.log.Warn("NATS async error", "subject", subj, "err", err)
		}),
	}
	auth, err := externalNATSOptions(cfg)
	if err != nil {
		return err
	}
	if cfg.NATSURL != "" {
		nc, err := nats.Connect(cfg.NATSURL, append(append(opts, auth...), nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return fmt.Errorf("cannot connect to NATS at %s: %w", RedactURLs(cfg.NATSURL), err)
		}
		a.nc = nc
		return nil
	}
	ecfg, err := embedConfig(cfg, a.log)
	if err != nil {
		return err
	}
	if need, err := natsembed.AuthRequired(ecfg); err != nil {
		return fmt.Errorf("cannot configure embedded NATS: %w", err)
	} else if need && len(auth) == 0 {
		return errors.New("--nats-config requires NATS authentication, so the gateway needs its own user: " +
			"give --nats-user and --nats-password (FABRIC_NATS_PASSWORD), --nats-nkey, --nats-token or --nats-creds")
	}
	ns, err := natsembed.Start(ecfg)
	if err != nil {
		return fmt.Errorf("cannot start embedded NATS: %w", err)
	}
	a.ns = ns
	if cfg.ClusterName != "" {
		// A clustered node answers stream creation only once the meta
		// group has a leader: wait for a quorum of peers first.
		a.log.Info("waiting for the NATS cluster (JetStream meta leader)", "cluster", cfg.ClusterName)
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := ns.WaitJetStreamReady(wctx)
		cancel()
		if err != nil {
			return err
		}
	}
	nc, err := nats.Connect("", append(append(opts, auth...), ns.ConnectOption())...)
	if err != nil && cfg.NATSConfig != "" {
		// In process, a refused login shows as a closed pipe.
		return fmt.Errorf("cannot connect to embedded NATS: %w (are the gateway's credentials in --nats-config?)", err)
	}
	if err != nil {
		return fmt.Errorf("cannot connect to embedded NATS: %w", err)
	}
	a.nc = nc
	return nil
}

// embedConfig is the embedded server's configuration ("off" or an empty
// --nats-listen: no client port).
func embedConfig(cfg Config, log *slog.Logger) (natsembed.Config, error) {
	ecfg := natsembed.Config{
		ConfigFile: cfg.NATSConfig,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		Logger:     log,
		// Cluster membership (fabric serve --cluster-*).
		ServerName:  cfg.NATSName,
		ClusterName: cfg.ClusterName,
		Routes:      cfg.Routes,
	}
	if cfg.ClusterName != "" {
		// --cluster-listen has a default; it only means something in a cluster.
		ecfg.ClusterListen = cfg.ClusterListen
	}
	leafEmbedConfig(cfg, &ecfg)
	if cfg.DataDir == "" {
		ecfg.StoreDir = filepath.Join("data", "nats")
	}
	if cfg.NATSListen == "" || cfg.NATSListen == "off" {
		if cfg.ClusterName != "" {
			// nats-server opens no listener at all without a client port,
			// routes included: the cluster would never form, silently.
			return ecfg, fmt.Errorf("--cluster-name needs the embedded NATS client port: with --nats-listen=%q no route listener starts; keep it on loopback (e.g. --nats-listen 127.0.0.1:4222)", cfg.NATSListen)
		}
		ecfg.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.NATSListen)
		if err != nil {
			return ecfg, fmt.Errorf("nats-listen: %w", err)
		}
		ecfg.Host, ecfg.Port = host, port
		if port == 0 {
			ecfg.Port = -1 // any free port
		}
	}
	return ecfg, nil
}

// externalNATSOptions turns the gateway's NATS credentials and TLS
// settings into nats.go options, checking every file now so that a missing
// or unreadable one stops Start with its name. The credentials are for an
// external NATS (NATSURL) or an embedded server with users (NATSConfig);
// TLS only for an external one (the embedded connection is in-process).
func externalNATSOptions(cfg Config) ([]nats.Option, error) {
	set := []struct{ flag, v string }{
		{"nats-creds", cfg.NATSCreds}, {"nats-nkey", cfg.NATSNkey}, {"nats-user", cfg.NATSUser},
		{"nats-password", cfg.NATSPassword}, {"nats-token", cfg.NATSToken}, {"nats-tls-ca", cfg.NATSTLSCA},
		{"nats-tls-cert", cfg.NATSTLSCert}, {"nats-tls-key", cfg.NATSTLSKey},
	}
	if cfg.NATSURL != "" && cfg.NATSConfig != "" {
		return nil, errors.New("--nats-config configures the embedded NATS server, and --nats-url means there is none: give one of them")
	}
	if cfg.NATSURL == "" {
		for i, s := range set {
			if s.v == "" {
				continue
			}
			if i >= 5 {
				return nil, fmt.Errorf("--%s is for an external NATS and needs --nats-url", s.flag)
			}
			if cfg.NATSConfig == "" {
				return nil, fmt.Errorf("--%s is for an external NATS and needs --nats-url, or for the embedded server's users and needs --nats-config", s.flag)
			}
		}
		if cfg.NATSConfig == "" {
			return nil, nil
		}
	}
	var methods []string
	for _, s := range set[:5] {
		if s.v != "" && s.flag != "nats-password" {
			methods = append(methods, "--"+s.flag)
		}
	}
	if len(methods) > 1 {
		return nil, fmt.Errorf("NATS authentication: give one of %s, not several", strings.Join(methods, ", "))
	}
	readable := func(flag, file string) error {
		if _, err := os.ReadFile(file); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		return nil
	}
	var opts []nats.Option
	switch {
	case cfg.NATSCreds != "":
		if err := readable("nats-creds", cfg.NATSCreds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	case cfg.NATSNkey != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNkey)
		if err != nil {
			return nil, fmt.Errorf("nats-nkey: %w", err)
		}
		opts = append(opts, o)
	case cfg.NATSToken != "":
		opts = append(opts, nats.Token(cfg.NATSToken))
	case cfg.NATSUser != "":
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSPassword != "" && cfg.NATSUser == "" {
		return nil, errors.New("--nats-password needs --nats-user")
	}
	if cfg.NATSTLSCA != "" {
		if err := readable("nats-tls-ca", cfg.NATSTLSCA); err != nil {
			return nil, err
		}
		opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
	}
	if (cfg.NATSTLSCert == "") != (cfg.NATSTLSKey == "") {
		return nil, errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if cfg.NATSTLSCert != "" {
		for _, f := range []struct{ flag, file string }{{"nats-tls-cert", cfg.NATSTLSCert}, {"nats-tls-key", cfg.NATSTLSKey}} {
			if err := readable(f.flag, f.file); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
	}
	// The files are parsed when nats.Connect applies the options; do it
	// here so that a bad one is named rather than reported as a failed
	// connection.
	var o nats.Options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("NATS credentials or TLS: %w", err)
		}
	}
	return opts, nil
}

// RedactURLs hides the credentials of every URL in a comma-separated list
// (nats://user:pass@host → nats://redacted@host), for logs and errors. A
// URL that does not parse but has an '@' loses everything before it.
func RedactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		parts[i] = p
		if !strings.Contains(p, "@") {
			continue
		}
		if u, err := url.Parse(p); err == nil {
			if u.User != nil {
				u.User = url.User("redacted")
				parts[i] = u.String()
			}
			continue
		}
		start := 0
		if k := strings.Index(p, "://"); k >= 0 {
			start = k + 3
		}
		if at := strings.LastIndex(p, "@"); at >= start {
			parts[i] = p[:start] + "redacted" + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// newVerifier builds the JWT verifier from the config; nil means anonymous.
func newVerifier(cfg Config) (*auth.Verifier, error) {
	ac := auth.Config{
		Secret:   []byte(cfg.JWTSecret),
		JWKSURL:  cfg.JWKSURL,
		Issuer:   cfg.JWTIssuer,
		Audience: cfg.JWTAudience,
		Leeway:   cfg.JWTLeeway,
	}
	if cfg.JWTPublicKeyFile != "" {
		pem, err := os.ReadFile(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwt-public-key: %w", err)
		}
		ac.PublicKeyPEMs = [][]byte{pem}
	}
	v, err := auth.New(ac)
	if errors.Is(err, auth.ErrNoKeys) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	return v, nil
}

// checkAnonymous: with no keys configured, joins are open, so every
// listener (routes included) must be on loopback unless the operator
// explicitly allows anonymous access.
func checkAnonymous(cfg Config) error {
	if cfg.AllowAnonymous {
		return nil
	}
	for _, l := range []struct{ name, addr string }{
		{"listen", cfg.Listen}, {"api-listen", cfg.APIListen}, {"ops-listen", cfg.OpsListen}, {"nats-listen", cfg.NATSListen}, {"cluster-listen", cfg.ClusterListen},
	} {
		embedded := l.name == "nats-listen" || l.name == "cluster-listen"
		if l.addr == "" || l.addr == "off" || (embedded && cfg.NATSURL != "") || (l.name == "cluster-listen" && cfg.ClusterName == "") {
			continue
		}
		if !isLoopback(l.addr) {
			return fmt.Errorf("%w: --%s %s (configure JWT keys, or pass --allow-anonymous to run open on purpose)", ErrOpenOnNetwork, l.name, l.addr)
		}
	}
	return nil
}

// checkExposure refuses listeners that would give the network what only
// the operator and trusted services may have, whatever the client
// authentication mode: the ops port (no authentication: metrics, and
// profiles when --pprof is on) off loopback unless AllowRemoteOps, and any
// listener of the embedded NATS server off loopback that lets a
// connection in without credentials. Anyone reaching an open NATS port can
// read every channel and every routed push, answer pushes meant for a
// service, publish anything and delete the streams.
func checkExposure(cfg Config) error {
	if cfg.OpsListen != "" && cfg.OpsListen != "off" && !isLoopback(cfg.OpsListen) && !cfg.AllowRemoteOps {
		return fmt.Errorf("%w: --ops-listen %s serves /metrics and /readyz without authentication; "+
			"bind it to loopback, or pass --allow-remote-ops if only your monitoring network reaches that address",
			ErrOpenOnNetwork, cfg.OpsListen)
	}
	if cfg.NATSURL != "" {
		return nil // the external servers are secured by their own configuration
	}
	ecfg, err := embedConfig(cfg, nil)
	if err != nil {
		return err
	}
	listeners, err := natsembed.Listeners(ecfg)
	if err != nil {
		return fmt.Errorf("cannot configure embedded NATS: %w", err)
	}
	for _, l := range listeners {
		if l.Authenticated || l.Loopback() {
			continue
		}
		switch l.Kind {
		case natsembed.KindClient:
			return fmt.Errorf("%w: --nats-listen %s: the embedded NATS would accept clients without credentials; "+
				"give --nats-config with users, nkeys or accounts (docs/security.md), or keep --nats-listen on loopback or off",
				ErrOpenOnNetwork, cfg.NATSListen)
		case natsembed.KindCluster:
			return fmt.Errorf("%w: --cluster-listen %s: NATS routes would accept any server; "+
				"add cluster { authorization { user: …, password: … } } (or TLS with verify) to --nats-config, or keep --cluster-listen on loopback",
				ErrOpenOnNetwork, cfg.ClusterListen)
		case natsembed.KindMonitor:
			if cfg.AllowRemoteOps {
				continue
			}
			return fmt.Errorf("%w: the NATS monitoring port %s in --nats-config has no authentication; "+
				"bind it to loopback, or pass --allow-remote-ops if only your monitoring network reaches it",
				ErrOpenOnNetwork, l.Addr)
		default:
			return fmt.Errorf("%w: the NATS %s listener %s in --nats-config would accept connections without credentials; configure its authorization",
				ErrOpenOnNetwork, l.Kind, l.Addr)
		}
	}
	return nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func intOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
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
