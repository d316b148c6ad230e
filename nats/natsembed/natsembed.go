package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
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
}

// Server is a running embedded nats-server.
type Server struct {
	ns         *server.Server
	dontListen bool
}

// Start starts the server and returns once it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.JetStream && cfg.StoreDir == "" {
		// nats-server would silently pick a temp directory and lose history
		// on every restart.
		return nil, errors.New("natsembed: StoreDir is required with JetStream")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = defaultServerName()
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		DontListen: cfg.DontListen,
		JetStream:  cfg.JetStream,
		StoreDir:   cfg.StoreDir,
		Debug:      cfg.Debug,
		Trace:      cfg.Trace,
		// Fabric owns SIGINT/SIGTERM and drains gateways first; the server
		// must not exit the process behind its back.
		NoSigs: true,
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

	ready := make(chan bool, 1)
	go func() { ready <- ns.ReadyForConnections(readyTimeout) }()
	select {
	case ok := <-ready:
		if ok {
			return &Server{ns: ns, dontListen: cfg.DontListen}, nil
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: server not ready for connections after %s", readyTimeout)
	case msg := <-lg.fatal:
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: %s", msg)
	}
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

// NATS exposes the underlying server for monitoring (Varz, Subsz, JszAccount).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has released its port and
// store, so a restart on the same port or directory works right after.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
