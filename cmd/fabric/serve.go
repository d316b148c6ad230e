package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/config"
)

// serveFlags declares every `fabric serve` setting. Each is also
// FABRIC_<NAME> and a YAML key.
func serveFlags(cfg *app.Config, logLevel, logFormat *string, shutdownTimeout *time.Duration) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric serve", flag.ContinueOnError)
	fs.String("config", "", "optional YAML file whose keys are these flag names")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:4000", "client HTTP address: /socket/websocket, /socket/longpoll, demo page")
	fs.StringVar(&cfg.OpsListen, "ops-listen", "127.0.0.1:4001", `ops HTTP address, no authentication: /healthz, /readyz, /metrics, /debug/pprof with --pprof ("off" for none); off loopback only with --allow-remote-ops`)
	fs.BoolVar(&cfg.AllowRemoteOps, "allow-remote-ops", false, "allow --ops-listen (and a NATS monitoring port) on a non-loopback address, for a network only monitoring reaches")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof profiles on the ops listener (never /debug/pprof/cmdline)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "127.0.0.1:4222", `embedded NATS client port, for "nats pub" and services ("off" for in-process only); off loopback only with --nats-config users`)
	fs.StringVar(&cfg.NATSConfig, "nats-config", "", "nats-server config file for the embedded server: users, nkeys or accounts, cluster authorization, TLS (docs/security.md); the gateway logs in with --nats-user/--nats-nkey/...")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "data directory; the embedded JetStream store is <data-dir>/nats")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS servers (comma-separated URLs); no embedded server is started")
	// Embedded-server clustering (no effect with --nats-url).
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "join the embedded NATS server to this cluster (routes; JetStream R3 needs 3 nodes; docs/operations.md); no effect with --nats-url")
	fs.StringVar(&cfg.ClusterListen, "cluster-listen", "127.0.0.1:6222", "embedded NATS route listener, used with --cluster-name; no effect with --nats-url")
	fs.Var(listFlag{&cfg.Routes}, "routes", "embedded NATS seed routes, comma-separated nats-route://host:port URLs, used with --cluster-name; no effect with --nats-url")
	fs.StringVar(&cfg.NATSName, "nats-name", "", "embedded NATS server name, unique and stable per cluster node (default fabric-<hostname>[-<cluster port>]); no effect with --nats-url")
	// Regions: the embedded server as a leaf node of another region's hub
	// (docs/regions.md).
	fs.Var(listFlag{&cfg.Leaf.Remotes}, "leafnode-remote", "connect the embedded NATS server as a leaf node to a hub in another region: its leaf-node URLs, comma-separated nats-leaf://host:port (tls:// for TLS); not with --nats-url")
	fs.StringVar(&cfg.Leaf.Creds, "leafnode-creds", "", "credentials file (user JWT and NKey seed) the leaf node logs in to the hub with")
	fs.StringVar(&cfg.Leaf.Nkey, "leafnode-nkey", "", "NKey user seed file (SU…) the leaf node logs in to the hub with")
	fs.StringVar(&cfg.Leaf.User, "leafnode-user", "", "hub user the leaf node logs in as (with --leafnode-password)")
	fs.StringVar(&cfg.Leaf.Password, "leafnode-password", "", "password for --leafnode-user (prefer FABRIC_LEAFNODE_PASSWORD)")
	fs.StringVar(&cfg.Leaf.TLSCA, "leafnode-tls-ca", "", "PEM file of CA certificates verifying the hub (implies TLS on the leaf link)")
	fs.StringVar(&cfg.JetStreamDomain, "jetstream-domain", "", "JetStream domain of the embedded server; with --leafnode-remote default: --cluster-name, else the server name (--nats-name)")
	fs.StringVar(&cfg.HistoryDomain, "history-domain", "", "JetStream domain the persistent namespaces' streams live in (their home region, e.g. the hub's); required with --leafnode-remote when a namespace keeps history; default: the connected server's own")
	// The gateway's own NATS credentials: for an external NATS, or for the
	// embedded server when --nats-config defines users; TLS is for an
	// external NATS only. User and password may also be given in the URL.
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "gateway's NATS credentials file (user JWT and NKey seed, from nsc); needs --nats-url or --nats-config")
	fs.StringVar(&cfg.NATSNkey, "nats-nkey", "", "gateway's NATS NKey seed file (SU…); needs --nats-url or --nats-config")
	fs.StringVar(&cfg.NATSUser, "nats-user", "", "gateway's NATS user name (with --nats-password; or nats://user:pass@host in --nats-url); needs --nats-url or --nats-config")
	fs.StringVar(&cfg.NATSPassword, "nats-password", "", "password for --nats-user (prefer FABRIC_NATS_PASSWORD)")
	fs.StringVar(&cfg.NATSToken, "nats-token", "", "gateway's NATS authentication token (prefer FABRIC_NATS_TOKEN); needs --nats-url or --nats-config")
	fs.StringVar(&cfg.NATSTLSCA, "nats-tls-ca", "", "external NATS: PEM file of CA certificates to verify the servers with (implies TLS); needs --nats-url")
	fs.StringVar(&cfg.NATSTLSCert, "nats-tls-cert", "", "external NATS: PEM client certificate file for mutual TLS (with --nats-tls-key); needs --nats-url")
	fs.StringVar(&cfg.NATSTLSKey, "nats-tls-key", "", "external NATS: PEM private key file of --nats-tls-cert; needs --nats-url")
	// Liveness of the NATS link (docs/nats-faults.md).
	fs.DurationVar(&cfg.NATSProbeInterval, "nats-probe-interval", 2*time.Second, "send NATS a round trip this often to check the link; two failures in a row mark it down: /readyz 503, joins and pushes answered unavailable at once (docs/nats-faults.md)")
	fs.DurationVar(&cfg.NATSProbeTimeout, "nats-probe-timeout", 2*time.Second, "a probe round trip not answered within this long failed")
	fs.DurationVar(&cfg.NATSPingInterval, "nats-ping-interval", 5*time.Second, "nats.go's ping interval: the connection is dropped and redialled after --nats-max-pings-out unanswered pings")
	fs.IntVar(&cfg.NATSMaxPingsOut, "nats-max-pings-out", 2, "unanswered nats.go pings before the connection is dropped and redialled")
	fs.BoolVar(&cfg.AllowAnonymous, "allow-anonymous", false, "allow open (unauthenticated) joins on non-loopback listeners")
	fs.StringVar(&cfg.SubjectPrefix, "subject-prefix", "fabric", "NATS subject prefix: topic room:lobby maps to <prefix>.room.lobby")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 64<<10, "largest client message in bytes (whole message, all fragments); over it: close 1009")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "close (4000) a connection that sent nothing for this long; phoenix.js heartbeats every 30s")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 5*time.Second, "close (4008) a connection whose output has not drained for this long")
	fs.IntVar(&cfg.MaxQueueBytes, "max-queue-bytes", 256<<10, "outbound bytes queued per connection before it is closed as a slow consumer (4008)")
	fs.Int64Var(&cfg.MaxOutputBytes, "max-output-bytes", 256<<20, "outbound bytes queued for clients that stopped reading, all connections of both transports together; over it the connection holding the most is closed as a slow consumer (4008), then the next, until under it (docs/limits.md); 0: no process-wide bound")
	fs.IntVar(&cfg.SendBuffer, "socket-send-buffer", 0, "SO_SNDBUF of each WebSocket socket in bytes, capping the kernel memory a client that stopped reading can pin (which --max-output-bytes does not count); 0: the kernel's autotuning, up to net.ipv4.tcp_wmem's maximum (4 MiB by default)")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 5*time.Second, "time allowed for the HTTP upgrade request")
	fs.BoolVar(&cfg.Compression, "compression", false, "offer WebSocket permessage-deflate (each message compressed once and shared by every member that negotiated it; a namespace can opt out with compression: false) and gzip LongPoll answers")
	fs.IntVar(&cfg.CompressionThreshold, "compression-threshold", 256, "messages and LongPoll answers smaller than this many bytes are sent uncompressed (with --compression)")
	fs.IntVar(&cfg.MaxChannels, "max-channels", 100, "channels one connection may join")
	fs.DurationVar(&cfg.LeaveGrace, "leave-grace", 2*time.Second, "keep a topic's NATS subscription this long after its last local member left")
	// Authentication and authorization.
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "HS256 key for connection tokens (≥ 32 bytes; prefer FABRIC_JWT_SECRET)")
	fs.StringVar(&cfg.JWTPublicKeyFile, "jwt-public-key", "", "PEM public key file: RS256, ES256 or EdDSA tokens")
	fs.StringVar(&cfg.JWKSURL, "jwks-url", "", "JWK Set URL with rotating keys (refetched at most once a minute; lookups wait ≤ 2s)")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "required iss claim")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", "", "required aud claim")
	fs.DurationVar(&cfg.JWTLeeway, "jwt-leeway", 30*time.Second, "clock skew tolerated on exp, nbf, iat")
	fs.BoolVar(&cfg.AllowQueryToken, "allow-query-token", true, "accept the token from the token query parameter (phoenix.js params); tokens in URLs reach access logs, so turn it off when clients use authToken")
	fs.Var(listFlag{&cfg.AllowedOrigins}, "allowed-origins", "comma-separated Origin allow-list for upgrades and LongPoll, e.g. https://app.example.com (403 otherwise; default any)")
	fs.Var(listFlag{&cfg.PublishAPIKeys}, "publish-api-keys", "comma-separated API keys for POST /api/v1/publish (prefer FABRIC_PUBLISH_API_KEYS)")
	fs.StringVar(&cfg.APIListen, "api-listen", "", "server API (gRPC over h2c, gRPC-Web, Connect, REST; docs/api.md) on its own address; empty: on --listen")
	fs.StringVar(&cfg.APIKeysFile, "api-keys-file", "", "YAML file of scoped server API keys (name, sha256, publish/presence/history patterns, admin; docs/api.md)")
	fs.Float64Var(&cfg.APIRate, "api-rate", 100, "server API requests per second per credential (burst twice that); over: 429 / RESOURCE_EXHAUSTED (0: off)")
	// Limits.
	fs.IntVar(&cfg.MaxConnections, "max-connections", 100000, "connections per gateway; over it upgrades get 503 + Retry-After (0: unlimited)")
	fs.IntVar(&cfg.MaxConnectionsPerIP, "max-connections-per-ip", 1000, "connections per client address (IPv4 address, IPv6 /64); over it 429 + Retry-After; behind a proxy that hides client addresses raise it or use 0 (off); docs/limits.md")
	fs.IntVar(&cfg.MaxConnectionsPerUser, "max-connections-per-user", 100, "connections per user (token sub) on this gateway; over it 429 + Retry-After (0: off)")
	fs.IntVar(&cfg.MaxLongPollPerUser, "max-longpoll-per-user", 10, "LongPoll sessions per user on this gateway; over it the session is refused (0: off)")
	fs.IntVar(&cfg.MaxChannelsPerUser, "max-channels-per-user", 1000, `channels one user may have joined across its connections on this gateway; over: join error "too many channels joined by user" (0: off)`)
	fs.Float64Var(&cfg.AuthFailureRate, "auth-failure-rate", 10, "bad credentials one client address may present per second (burst twice that); past it 429 before any verification (0: off)")
	fs.IntVar(&cfg.MaxPendingHandshakes, "max-pending-handshakes", 4096, "upgrades in progress; over it 503 + Retry-After (0: unlimited)")
	fs.Float64Var(&cfg.MaxAcceptRate, "max-accept-rate", 2000, "new connections (upgrades and LongPoll sessions) accepted per second per gateway once a burst of --max-accept-burst is spent; over it 503 + Retry-After: 1 (0: off)")
	fs.IntVar(&cfg.MaxAcceptBurst, "max-accept-burst", 10000, "new connections accepted at once before --max-accept-rate paces them: a reconnect wave of this many clients gets in without waiting; docs/limits.md says why 10000 (0: one second of the rate)")
	fs.Float64Var(&cfg.JoinRate, "join-rate", 10, "joins per connection per second (burst twice that); over: rate_limited with retry_after_ms; sustained abuse: close 4029 (0: off)")
	fs.Float64Var(&cfg.PushBytesRate, "push-bytes-rate", 64<<10, "payload bytes per connection per second pushed (burst 4 s worth, at least --max-message-size); over: rate_limited (0: off)")
	fs.Int64Var(&cfg.HistoryMemory, "history-memory", 64<<20, "bytes of recent messages kept in memory for resumes, all persistent channels together; each keeps its share, at least its latest message")
	fs.IntVar(&cfg.HistoryMemoryPerChannel, "history-memory-per-channel", 1<<20, "at most this many bytes of recent messages kept in memory per persistent channel")
	fs.Float64Var(&cfg.PushRate, "push-rate", 100, "pushes per connection per second (burst twice that); over: rate_limited with retry_after_ms; sustained abuse: close 4029 (0: off)")
	// Connect and join hooks (docs/hooks.md).
	fs.BoolVar(&cfg.ConnectHook, "connect-hook", false, "ask a service on fabric_connect before accepting each connection (connect/3 over NATS): a refusal is HTTP 403 with its reason; no service or no answer refuses too")
	fs.DurationVar(&cfg.ConnectHookTimeout, "connect-hook-timeout", 5*time.Second, "how long the connect hook may take; no answer in time refuses the connection (403 timeout)")
	fs.IntVar(&cfg.HookConcurrency, "hook-concurrency", 256, "connect and join hook requests in flight per gateway; more wait for a slot within their timeout")
	// LongPoll.
	fs.DurationVar(&cfg.LongPollWindow, "longpoll-window", 10*time.Second, "how long a LongPoll GET is held waiting for messages (at most 15s)")
	fs.DurationVar(&cfg.LongPollIdleTimeout, "longpoll-idle-timeout", 15*time.Second, "end a LongPoll session not polled for this long (its client resumes by offset); when not set: 1.5 × --longpoll-window")
	fs.StringVar(&cfg.LongPollSecret, "longpoll-secret", "", "signs LongPoll session tokens; give every gateway behind one balancer the same (default random per process)")
	fs.DurationVar(&cfg.DrainWindow, "drain-window", 5*time.Second, "on SIGTERM, close clients (code 1012) in batches over this long, so they reconnect elsewhere as a trickle; keep it under --shutdown-timeout")
	fs.DurationVar(shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for clients' close handshakes")
	fs.StringVar(logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(logFormat, "log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise (log collectors)")
	return fs
}

func serve(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	var (
		cfg             app.Config
		logLevel        string
		logFormat       string
		shutdownTimeout time.Duration
	)
	fs := serveFlags(&cfg, &logLevel, &logFormat, &shutdownTimeout)
	fs.SetOutput(stderr)
	// namespaces: is the one structured section of the YAML file; when
	// present it replaces the default (room:* with history) entirely.
	var nss map[string]namespaceConfig
	rest, err := config.Load(fs, args, config.Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: environ,
		Sections: map[string]any{"namespaces": &nss}})
	if err != nil {
		return err
	}
	if nss != nil {
		cfg.Namespaces = make(map[string]namespace.Namespace, len(nss))
		for name, ns := range nss {
			cfg.Namespaces[name] = ns.Namespace
			cfg.Grants.Join = append(cfg.Grants.Join, ns.Join...)
			cfg.Grants.Publish = append(cfg.Grants.Publish, ns.Publish...)
		}
		if err := namespace.Validate(cfg.Namespaces); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	if len(rest) > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", rest)
	}
	logger, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	sources := config.Sources(fs)
	if sources["longpoll-idle-timeout"] == config.SourceDefault {
		// Follow a changed --longpoll-window (1.5 × it; 15s by default).
		cfg.LongPollIdleTimeout = 0
	}
	gcPercent := setGCPercent(environ)
	logger.Info("starting", append([]any{"version", versionString(), "gogc", gcPercent}, startAttrs(fs, sources)...)...)
	cfg.Logger = logger
	cfg.Version = versionNumber()
	cfg.Home = homePage()

	a, err := app.Start(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Fabric is running: demo page http://%s/  WebSocket ws://%s/socket/websocket", a.HTTPAddr(), a.HTTPAddr())
	if u := a.NATSURL(); u != "" {
		fmt.Fprintf(stdout, "  NATS %s", u)
	}
	fmt.Fprintln(stdout)

	<-ctx.Done()
	logger.Info("shutting down", "timeout", shutdownTimeout)
	// A second signal while we drain forces the exit. The watcher ends with
	// serve: a process that runs serve more than once (tests) keeps none.
	drained := make(chan struct{})
	defer close(drained)
	go func() {
		sig := make(chan os.Signal, 1)
		notifyAgain(sig)
		defer signal.Stop(sig)
		select {
		case <-sig:
			logger.Error("second signal: exiting now")
			os.Exit(1)
		case <-drained:
		}
	}()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		logger.Warn("shutdown incomplete", "err", err)
	}
	logger.Info("stopped")
	return nil
}

// startAttrs is the effective configuration for the start log line, one
// {value, source} group per flag, with every secret hidden: values of flags
// named like a secret ("secret", "token", "password", "key") are replaced by
// config.Redacted, and credentials inside URLs (nats://user:pass@host) by
// app.RedactURLs. Booleans are never secret ("allow-query-token").
func startAttrs(fs *flag.FlagSet, sources map[string]string) []any {
	attrs := config.Redacted(fs, sources)
	for i, a := range attrs {
		at, ok := a.(slog.Attr)
		if !ok {
			continue
		}
		f := fs.Lookup(at.Key)
		if f == nil {
			continue
		}
		v := f.Value.String()
		switch {
		case isBoolFlag(f):
		case strings.Contains(v, "://") && (strings.HasSuffix(f.Name, "-url") || f.Name == "routes" || f.Name == "leafnode-remote"):
			v = app.RedactURLs(v)
		default:
			continue
		}
		attrs[i] = slog.Group(f.Name, slog.String("value", v), slog.String("source", sources[f.Name]))
	}
	return attrs
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// listFlag is a comma-separated list flag; each use (or the environment
// variable, or a YAML list) appends.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(v string) error {
	*l.p = append(*l.p, splitList(v)...)
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format: want text, json or auto, got %q", format)
}

// defaultGCPercent is the collector's target for a gateway: its heap is
// mostly long-lived per-connection state, and the broadcast path allocates
// per message, not per recipient, so collecting at +50 % instead of the
// runtime's +100 % costs little CPU (bench/results/fanout-gogc50.txt) and
// saves about a quarter of the memory per idle connection
// (idle-gogc50.txt). GOGC in the environment wins, as for any Go program.
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless GOGC is set, and returns the
// setting in force (for the start log line).
func setGCPercent(environ []string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GOGC="); ok {
			return v
		}
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}

// isTerminal reports whether w is a terminal (a TCGETS ioctl succeeds).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// namespaceConfig is one entry of the YAML namespaces section: the
// namespace policy plus patterns granted to every authenticated user.
type namespaceConfig struct {
	namespace.Namespace `yaml:",inline"`
	// Join and Publish grant topic patterns to every authenticated user;
	// {sub} is the user ("user:{sub}").
	Join    []auth.Pattern `yaml:"join"`
	Publish []auth.Pattern `yaml:"publish"`
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
