package natsembed

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// readyTimeout bounds how long Start waits for the server to accept
// connections (JetStream recovery of a large store is the slow part).
const readyTimeout = 10 * time.Second

// Config configures the embedded server. The zero value is a core-NATS
// server on 127.0.0.1:4222.
type Config struct {
	Host       string // default "127.0.0.1": loopback unless asked otherwise
	Port       int    // client port; -1 = random; 0 = default 4222
	DontListen bool   // no client port at all (in-process connections only)
	StoreDir   string // JetStream storage directory, required with JetStream
	JetStream  bool
	ServerName string       // default "fabric-" + host name
	Logger     *slog.Logger // nats-server logs; nil discards them
	Debug      bool
	Trace      bool

	// Cluster membership (routes). With ClusterName empty the server is a
	// standalone node and the other cluster fields must be empty too.
	//
	// In a JetStream cluster every node needs a unique and stable
	// ServerName: it is the node's Raft identity, so a node restarted under
	// another name comes back as a new peer. When ServerName is empty it is
	// derived as "fabric-<hostname>-<cluster port>" (unique per host and
	// port, stable across restarts); with a random cluster port (-1 or 0)
	// it gets a random suffix instead and is NOT stable — set it explicitly.
	//
	// A JetStream cluster node must be given Routes: nats-server refuses to
	// start one without any. Give every node the same list of all nodes'
	// route URLs (a node skips itself), so any start order forms the mesh.
	// Streams need a meta leader, i.e. a majority of nodes up, before they
	// can be created.
	ClusterName   string   // cluster name; every node of one cluster uses the same
	ClusterListen string   // route listener host:port, e.g. "0.0.0.0:6222"; port -1 or 0: random
	Routes        []string // seed routes, "nats-route://host:port"; listing this node itself is fine
	// SyncInterval is how often JetStream fsyncs its files (nats-server
	// sync_interval; 0: the server default, 2 minutes). SyncAlways (a
	// negative value) fsyncs every write.
	SyncInterval time.Duration

	// Leaf nodes (docs/regions.md). JetStreamDomain names this server's
	// JetStream domain (jetstream { domain }): across a leaf-node link
	// each side's JetStream is reached as $JS.<domain>.API, never as the
	// plain $JS.API, which nats-server keeps local. With LeafRemotes and
	// no domain, one is derived (DerivedDomain). LeafNodeListen accepts
	// leaf nodes (host:port, port -1 or 0: random); their authorization
	// comes from ConfigFile (leafnodes { authorization }, or the client
	// users and accounts). LeafRemotes connect this server to hubs.
	JetStreamDomain string
	LeafNodeListen  string
	LeafRemotes     []LeafRemote

	// ConfigFile is a nats-server configuration file (the format of
	// `nats-server -c`, environment variables and includes resolved as
	// nats-server does) for everything Config has no field for: above all
	// authentication (authorization, accounts, nkeys, operator JWTs), route
	// authorization (cluster { authorization {} }), TLS, leaf nodes. The
	// settings above are Fabric's and may not appear in the file: client
	// listen/port, server_name, store_dir, cluster name and listen. Routes
	// in the file are used when Routes is empty.
	ConfigFile string
}

// SyncAlways as Config.SyncInterval makes JetStream fsync every write
// (nats-server `sync_interval: always`).
const SyncAlways time.Duration = -1

// Server is a running embedded nats-server.
type Server struct {
	ns         *server.Server
	dontListen bool
}

// Start starts the server and returns once it accepts connections.
func Start(cfg Config) (*Server, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	// The adapter is installed even without a Logger: it is how Start learns
	// about fatal start-up errors (port in use, JetStream store unusable)
	// without waiting out the whole ready timeout.
	lg := &logger{l: cfg.Logger, fatal: make(chan string, 1)}
	if lg.l == nil {
		lg.l = slog.New(slog.DiscardHandler)
	}
	ns.SetLogger(lg, cfg.Debug, cfg.Trace)
	ns.Start()

	// The readiness poll runs in short steps so that a fatal error can stop
	// it: one ReadyForConnections(readyTimeout) would outlive a failed Start
	// by up to readyTimeout.
	ready, stop := make(chan bool, 1), make(chan struct{})
	go func() {
		deadline := time.Now().Add(readyTimeout)
		for {
			if ns.ReadyForConnections(50 * time.Millisecond) {
				ready <- true
				return
			}
			select {
			case <-stop:
				ready <- false
				return
			default:
			}
			if time.Now().After(deadline) {
				ready <- false
				return
			}
		}
	}()
	select {
	case ok := <-ready:
		if ok {
			return &Server{ns: ns, dontListen: cfg.DontListen}, nil
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: server not ready for connections after %s", readyTimeout)
	case msg := <-lg.fatal:
		close(stop)
		<-ready // the poll has ended
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: %s", msg)
	}
}

// options turns cfg (and its ConfigFile) into nats-server options.
func (cfg Config) options() (*server.Options, error) {
	if cfg.JetStream && cfg.StoreDir == "" {
		// nats-server would silently pick a temp directory and lose history
		// on every restart.
		return nil, errors.New("natsembed: StoreDir is required with JetStream")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ClusterName == "" && (cfg.ClusterListen != "" || len(cfg.Routes) > 0) {
		return nil, errors.New("natsembed: ClusterListen and Routes need ClusterName")
	}
	var (
		clusterHost string
		clusterPort int
		routes      []*url.URL
	)
	if cfg.ClusterName != "" {
		if strings.ContainsAny(cfg.ClusterName, " \t.*>") {
			return nil, fmt.Errorf("natsembed: bad cluster name %q", cfg.ClusterName)
		}
		if cfg.ClusterListen == "" {
			return nil, errors.New("natsembed: ClusterName needs ClusterListen")
		}
		h, p, err := net.SplitHostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("natsembed: cluster listen %q: %w", cfg.ClusterListen, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < -1 || port > 65535 {
			return nil, fmt.Errorf("natsembed: cluster listen %q: bad port", cfg.ClusterListen)
		}
		if port == 0 {
			port = -1 // nats-server: 0 means "no cluster port"
		}
		if h == "" {
			h = "0.0.0.0"
		}
		clusterHost, clusterPort = h, port
		routes, err = ParseRoutes(cfg.Routes)
		if err != nil {
			return nil, err
		}
		if cfg.ServerName == "" {
			if port > 0 {
				cfg.ServerName = defaultServerName() + "-" + strconv.Itoa(port)
			} else {
				cfg.ServerName = defaultServerName() + "-" + rand.Text()[:8]
			}
		}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = defaultServerName()
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		var err error
		if opts, err = LoadConfigFile(cfg.ConfigFile); err != nil {
			return nil, err
		}
	}
	opts.ServerName = cfg.ServerName
	opts.Host, opts.Port, opts.DontListen = cfg.Host, cfg.Port, cfg.DontListen
	opts.JetStream, opts.StoreDir = cfg.JetStream, cfg.StoreDir
	opts.Debug, opts.Trace = cfg.Debug, cfg.Trace
	// Fabric owns SIGINT/SIGTERM and drains gateways first; the server
	// must not exit the process behind its back.
	opts.NoSigs = true
	if cfg.ClusterName != "" {
		// The file may bring the cluster's authorization and TLS; name,
		// address and routes are Fabric's settings.
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = cfg.ClusterName, clusterHost, clusterPort
		if len(routes) == 0 {
			routes = opts.Routes
		}
		opts.Routes = withRouteCredentials(routes, opts.Cluster.Username, opts.Cluster.Password)
	} else if len(opts.Routes) > 0 {
		return nil, fmt.Errorf("natsembed: %s: cluster routes without ClusterName", cfg.ConfigFile)
	}
	if err := cfg.leafOptions(opts); err != nil {
		return nil, err
	}
	switch {
	case cfg.SyncInterval < 0:
		opts.SyncInterval, opts.SyncAlways = 2*time.Minute, true
	case cfg.SyncInterval > 0:
		opts.SyncInterval = cfg.SyncInterval
	}
	return opts, nil
}

// LoadConfigFile reads a nats-server configuration file for
// Config.ConfigFile, refusing the settings Config owns: two sources for
// one setting would leave the operator guessing which one is in force.
func LoadConfigFile(path string) (*server.Options, error) {
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("natsembed: config file: %w", err)
	}
	var owned []string
	for _, c := range []struct {
		set  bool
		what string
	}{
		{o.Host != "" || o.Port != 0, "listen/host/port"},
		{o.ServerName != "", "server_name"},
		{o.StoreDir != "", "jetstream store_dir"},
		{o.Cluster.Name != "", "cluster name"},
		{o.Cluster.Host != "" || o.Cluster.Port != 0, "cluster listen/host/port"},
	} {
		if c.set {
			owned = append(owned, c.what)
		}
	}
	if len(owned) > 0 {
		return nil, fmt.Errorf("natsembed: config file %s sets %s: Fabric's own settings choose these; remove them from the file",
			path, strings.Join(owned, ", "))
	}
	return o, nil
}

// withRouteCredentials gives every route URL without credentials the
// cluster's own route user, so the password lives in the config file
// instead of in every route URL (command lines are visible to other
// users of the host). nats-server does the same for routes it discovers.
func withRouteCredentials(routes []*url.URL, user, pass string) []*url.URL {
	if user == "" {
		return routes
	}
	out := make([]*url.URL, len(routes))
	for i, r := range routes {
		if r.User == nil {
			c := *r
			c.User = url.UserPassword(user, pass)
			r = &c
		}
		out[i] = r
	}
	return out
}

// ParseRoutes checks route URLs ("nats-route://host:port"; a bare host:port
// gets that scheme).
func ParseRoutes(rs []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range rs {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !strings.Contains(r, "://") {
			r = "nats-route://" + r
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("natsembed: bad route %q: want nats-route://host:port", r)
		}
		if u.Scheme != "nats-route" && u.Scheme != "nats" && u.Scheme != "tls" {
			return nil, fmt.Errorf("natsembed: bad route scheme %q", u.Scheme)
		}
		out = append(out, u)
	}
	return out, nil
}

// ParseSyncInterval reads a --sync-interval value: a duration, or "always"
// (SyncAlways); "" or "0" is the server default.
func ParseSyncInterval(v string) (time.Duration, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "default":
		return 0, nil
	case "always":
		return SyncAlways, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("sync interval %q: want a duration or \"always\"", v)
	}
	return d, nil
}

func defaultServerName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "fabric"
	}
	// Server names may not contain spaces; host names normally do not, but
	// a bad /etc/hostname must not stop the server from starting.
	return "fabric-" + strings.ReplaceAll(h, " ", "_")
}

// ClientURL is the URL clients connect to, "" with DontListen.
func (s *Server) ClientURL() string {
	if s.dontListen {
		return ""
	}
	return s.ns.ClientURL()
}

// ConnectOption makes nats.Connect use an in-process pipe to this server
// instead of TCP (pass "" as the URL). It works with or without DontListen.
func (s *Server) ConnectOption() nats.Option { return nats.InProcessServer(s.ns) }

// ClusterURL is the route URL other nodes use to reach this one
// ("nats-route://host:port"), "" when not clustered.
func (s *Server) ClusterURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

// WaitJetStreamReady waits until JetStream can serve API requests: at once
// for a standalone server; in a cluster, until the meta group has a leader
// this node is caught up with (a majority of nodes must be up). Stream
// creation sent before that can go unanswered until its deadline.
func (s *Server) WaitJetStreamReady(ctx context.Context) error {
	if !s.ns.JetStreamEnabled() || !s.ns.JetStreamIsClustered() {
		return nil
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !s.ns.JetStreamIsCurrent() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsembed: JetStream cluster has no meta leader (is a majority of nodes up and routed?): %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// NATS exposes the underlying server for monitoring (Varz, Subsz, JszAccount).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has released its port and
// store, so a restart on the same port or directory works right after.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
