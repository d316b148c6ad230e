package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/auth"
	"github.com/fabric-rt/fabric/internal/config"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// serveFlags declares every `fabric serve` setting. Each is also
// FABRIC_<NAME> and a YAML key.
func serveFlags(cfg *app.Config, logLevel, logFormat *string, shutdownTimeout *time.Duration) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric serve", flag.ContinueOnError)
	fs.String("config", "", "optional YAML file whose keys are these flag names")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:4000", "client HTTP address: /socket/websocket, /socket/longpoll, demo page")
	fs.StringVar(&cfg.OpsListen, "ops-listen", "127.0.0.1:4001", `ops HTTP address: /healthz, /readyz, /metrics, /debug/pprof ("off" for none)`)
	fs.StringVar(&cfg.NATSListen, "nats-listen", "127.0.0.1:4222", `embedded NATS client port, for "nats pub" and services ("off" for in-process only)`)
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "data directory; the embedded JetStream store is <data-dir>/nats")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS servers (comma-separated URLs); no embedded server is started")
	// Embedded-server clustering (no effect with --nats-url).
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "join the embedded NATS server to this cluster (routes; JetStream R3 needs 3 nodes); no effect with --nats-url")
	fs.StringVar(&cfg.ClusterListen, "cluster-listen", "127.0.0.1:6222", "embedded NATS route listener, used with --cluster-name; no effect with --nats-url")
	fs.Func("routes", "embedded NATS seed routes, comma-separated nats-route://host:port URLs, used with --cluster-name; no effect with --nats-url", func(v string) error {
		cfg.Routes = append(cfg.Routes, splitList(v)...)
		return nil
	})
	fs.StringVar(&cfg.NATSName, "nats-name", "", "embedded NATS server name, unique and stable per cluster node (default fabric-<hostname>[-<cluster port>]); no effect with --nats-url")
	fs.BoolVar(&cfg.AllowAnonymous, "allow-anonymous", false, "allow open (unauthenticated) joins on non-loopback listeners")
	fs.StringVar(&cfg.SubjectPrefix, "subject-prefix", "fabric", "NATS subject prefix: topic room:lobby maps to <prefix>.room.lobby")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 64<<10, "largest client message in bytes (whole message, all fragments); over it: close 1009")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "close (4000) a connection that sent nothing for this long; phoenix.js heartbeats every 30s")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 5*time.Second, "close (4008) a connection whose output has not drained for this long")
	fs.IntVar(&cfg.MaxQueueBytes, "max-queue-bytes", 256<<10, "outbound bytes queued per connection before it is closed as a slow consumer (4008)")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 5*time.Second, "time allowed for the HTTP upgrade request")
	fs.IntVar(&cfg.MaxChannels, "max-channels", 100, "channels one connection may join")
	fs.DurationVar(&cfg.LeaveGrace, "leave-grace", 2*time.Second, "keep a topic's NATS subscription this long after its last local member left")
	fs.DurationVar(&cfg.DrainWindow, "drain-window", 5*time.Second, "on SIGTERM, close clients (code 1012) in batches over this long, so they reconnect elsewhere as a trickle; keep it under --shutdown-timeout")
	fs.DurationVar(shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for clients' close handshakes")
	fs.StringVar(logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(logFormat, "log-format", "text", "text or json")
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
		cfg.Namespaces = make(map[string]natsbroker.Namespace, len(nss))
		for name, ns := range nss {
			cfg.Namespaces[name] = ns.Namespace
			cfg.Grants.Join = append(cfg.Grants.Join, ns.Join...)
			cfg.Grants.Publish = append(cfg.Grants.Publish, ns.Publish...)
		}
		if err := natsbroker.ValidateNamespaces(cfg.Namespaces); err != nil {
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
	logger.Info("starting", append([]any{"version", versionString()}, config.Redacted(fs, config.Sources(fs))...)...)
	cfg.Logger = logger
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
	// A second signal while we drain forces the exit.
	go func() {
		sig := make(chan os.Signal, 1)
		notifyAgain(sig)
		<-sig
		logger.Error("second signal: exiting now")
		os.Exit(1)
	}()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		logger.Warn("shutdown incomplete", "err", err)
	}
	logger.Info("stopped")
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format: want text or json, got %q", format)
}

// namespaceConfig is one entry of the YAML namespaces section: the bus
// settings plus patterns granted to every authenticated user.
type namespaceConfig struct {
	natsbroker.Namespace `yaml:",inline"`
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
