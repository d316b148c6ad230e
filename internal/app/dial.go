package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

// The one home of NATS dialing: the gateway's connection (Start's dial
// phase, to the embedded server or an external NATS), and the one-shot
// connections of the other commands with the same --nats-* flags
// (DialNATS). Nothing else in the process calls nats.Connect.

// startNATS is Start's dial phase: the gateway's connection, which never
// gives up on its bus, to an external NATS (NATSURL) or to the embedded
// server it starts first.
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

// DialNATS connects a one-shot command (fabric channel) to cfg's external
// NATS with the gateway's credentials and TLS settings (the --nats-*
// flags): timeout bounds the dial, and the connection does not reconnect.
func DialNATS(cfg Config, name string, timeout time.Duration) (*nats.Conn, error) {
	opts, err := externalNATSOptions(cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name(name), nats.Timeout(timeout), nats.NoReconnect())
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", RedactURLs(cfg.NATSURL), err)
	}
	return nc, nil
}
