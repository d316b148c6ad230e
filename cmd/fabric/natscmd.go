package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/internal/config"
	"github.com/fabric-rt/fabric/nats/natsembed"
)

// natsFlags declares `fabric nats`: a standalone NATS (JetStream) node run
// from the Fabric binary, e.g. one member of the 3-node cluster that
// gateways reach with `fabric serve --nats-url`.
//
// Unlike serve, these are command-line flags only: no FABRIC_* environment
// variables and no YAML file, so a FABRIC_NATS_URL or FABRIC_LISTEN meant
// for a gateway in the same environment can never reconfigure a NATS node.
type natsOptions struct {
	name, listen               string
	clusterName, clusterListen string
	routes                     []string
	storeDir, syncInterval     string
	jetstream, debug, trace    bool
	config                     string
	leafListen, domain         string
	allowNoAuth                bool
	logLevel, logFormat        string
	shutdownTimeout            time.Duration
}

func natsFlags(o *natsOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric nats", flag.ContinueOnError)
	fs.StringVar(&o.name, "name", "", "server name, unique and stable per cluster node (default fabric-<hostname>[-<cluster port>])")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "client address (gateways, services, the nats CLI); port 0: any free port")
	fs.StringVar(&o.clusterName, "cluster-name", "", "cluster to join (every node the same); empty: a standalone node")
	fs.StringVar(&o.clusterListen, "cluster-listen", "127.0.0.1:6222", "route address, used with --cluster-name")
	fs.Func("routes", "seed routes, comma-separated nats-route://host:port URLs (may include this node), used with --cluster-name; repeatable", func(v string) error {
		o.routes = append(o.routes, splitList(v)...)
		return nil
	})
	fs.StringVar(&o.leafListen, "leafnode-listen", "", "accept NATS leaf nodes (other regions' servers, `fabric serve --leafnode-remote`) on this address; off loopback only with authorization in --config (docs/regions.md)")
	fs.StringVar(&o.domain, "jetstream-domain", "", "JetStream domain of this node (every node of the cluster the same): leaf nodes reach its streams as $JS.<domain>.API (docs/regions.md)")
	fs.StringVar(&o.config, "config", "", "nats-server config file: users, nkeys or accounts, cluster authorization, TLS (docs/security.md); not listen, server_name, store_dir, cluster name/listen")
	fs.BoolVar(&o.allowNoAuth, "allow-no-auth", false, "allow the client and route listeners off loopback without authentication (a network only gateways and trusted services reach)")
	fs.StringVar(&o.storeDir, "store-dir", "./data/nats", "JetStream storage directory")
	fs.StringVar(&o.syncInterval, "sync-interval", "", `JetStream fsync interval: a duration, or "always" to fsync every write (default: the server's, 2m)`)
	fs.BoolVar(&o.jetstream, "jetstream", true, "enable JetStream (Fabric history needs it)")
	fs.BoolVar(&o.debug, "debug", false, "nats-server debug logging (with --log-level debug)")
	fs.BoolVar(&o.trace, "trace", false, "nats-server protocol tracing (with --log-level debug; very verbose)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to wait for the server to stop (lame-duck is not used)")
	return fs
}

// natsCmd runs a NATS node until ctx ends (SIGINT/SIGTERM in main).
func natsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o natsOptions
	fs := natsFlags(&o)
	fs.SetOutput(stderr)
	if err := config.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("nats: unexpected arguments %q", fs.Args())
	}
	cfg, err := o.embedConfig()
	if err != nil {
		return err
	}
	if err := o.checkExposure(cfg); err != nil {
		return err
	}
	logger, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	logger.Info("starting NATS", "version", versionString(), "listen", o.listen, "cluster", o.clusterName,
		"cluster_listen", cfg.ClusterListen, "routes", o.routes, "jetstream", o.jetstream, "store_dir", cfg.StoreDir,
		"leafnode_listen", o.leafListen, "jetstream_domain", o.domain)

	s, err := natsembed.Start(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "NATS %s is running: %s", s.NATS().Name(), s.ClientURL())
	if u := s.ClusterURL(); u != "" {
		fmt.Fprintf(stdout, "  routes %s", u)
	}
	if u := s.LeafURL(); u != "" {
		fmt.Fprintf(stdout, "  leaf nodes %s", u)
	}
	fmt.Fprintln(stdout)

	<-ctx.Done()
	logger.Info("shutting down NATS")
	done := make(chan struct{})
	go func() { s.Shutdown(); close(done) }()
	select {
	case <-done:
		logger.Info("stopped")
		return nil
	case <-time.After(o.shutdownTimeout):
		return fmt.Errorf("nats: shutdown did not finish within %s", o.shutdownTimeout)
	}
}

// checkExposure refuses, unless --allow-no-auth, a listener off loopback
// that lets anyone in: whoever reaches an open NATS node can read every
// channel and routed push, publish anything and delete the streams.
func (o *natsOptions) checkExposure(cfg natsembed.Config) error {
	if o.allowNoAuth {
		return nil
	}
	ls, err := natsembed.Listeners(cfg)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if l.Authenticated || l.Loopback() {
			continue
		}
		fix := "give --config with users, nkeys or accounts"
		switch l.Kind {
		case natsembed.KindCluster:
			fix = "add cluster { authorization { user: …, password: … } } to --config"
		case natsembed.KindMonitor:
			fix = "bind it to loopback in --config"
		case natsembed.KindLeafNode:
			fix = "give --config with leafnodes { authorization { … } } or users, nkeys or accounts"
		}
		return fmt.Errorf("nats: refusing to start: the %s listener %s accepts connections without credentials; %s (docs/security.md), "+
			"or pass --allow-no-auth if only gateways and trusted services can reach it", l.Kind, l.Addr, fix)
	}
	return nil
}

func (o *natsOptions) embedConfig() (natsembed.Config, error) {
	cfg := natsembed.Config{
		ConfigFile: o.config,
		ServerName: o.name,
		JetStream:  o.jetstream,
		Debug:      o.debug,
		Trace:      o.trace,

		LeafNodeListen:  o.leafListen,
		JetStreamDomain: o.domain,
	}
	if o.jetstream {
		cfg.StoreDir = o.storeDir
	}
	host, p, err := net.SplitHostPort(o.listen)
	if err != nil {
		return cfg, fmt.Errorf("listen: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return cfg, fmt.Errorf("listen: bad port %q", p)
	}
	if port == 0 {
		port = -1 // any free port (natsembed: 0 is the default 4222)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	cfg.Host, cfg.Port = host, port
	if cfg.SyncInterval, err = natsembed.ParseSyncInterval(o.syncInterval); err != nil {
		return cfg, err
	}
	if o.clusterName != "" {
		cfg.ClusterName, cfg.ClusterListen, cfg.Routes = o.clusterName, o.clusterListen, o.routes
	} else if len(o.routes) > 0 {
		return cfg, fmt.Errorf("nats: --routes needs --cluster-name")
	}
	return cfg, nil
}
