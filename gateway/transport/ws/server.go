package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// Config tunes the transport. Zero fields take the documented defaults.
type Config struct {
	// Loops is the number of epoll loops (default GOMAXPROCS).
	Loops int
	// MaxMessageSize caps one message, whether it arrives in one frame or in
	// many fragments (default 64 KiB). Over it: close 1009.
	MaxMessageSize int
	// IdleTimeout closes (4000) a connection that sent nothing for this long
	// (default 60 s; phoenix.js heartbeats every 30 s).
	IdleTimeout time.Duration
	// PingInterval sends a WebSocket ping to a connection silent for this
	// long, so clients that do not heartbeat (and NAT boxes) stay alive
	// (default 3/4 of IdleTimeout).
	PingInterval time.Duration
	// WriteTimeout closes (4008) a connection whose queued output has not
	// drained for this long (default 5 s).
	WriteTimeout time.Duration
	// MaxQueueBytes bounds a connection's queued output (default 256 KiB).
	// Over it: close 4008.
	MaxQueueBytes int
	// Budget is the process's output budget, shared with the other
	// transports (transport.OutputBudget says what it counts); nil: one
	// of this server's own without a limit, so the count still exists.
	Budget *transport.OutputBudget
	// CloseTimeout is how long a close handshake may take before the socket
	// is dropped (default 2 s).
	CloseTimeout time.Duration
	// HandshakeTimeout bounds writing the upgrade response (default 5 s).
	// Reading the request is bounded by the http.Server's ReadHeaderTimeout.
	HandshakeTimeout time.Duration
	// SendBuffer sets SO_SNDBUF on each socket when > 0, capping the kernel
	// memory a stalled reader can pin (default: the kernel's autotuning).
	SendBuffer int
	// Compression offers permessage-deflate (RFC 7692) to clients that
	// ask for it; see deflate.go and docs/compression.md.
	Compression bool
	// CompressMin is the size under which a message goes uncompressed
	// (0: every message is compressed when that makes it smaller).
	CompressMin int
	// DefaultCompression counts compressed messages that carry no class
	// of their own (replies to one connection); may be nil.
	DefaultCompression *transport.Compression
	// Logger receives transport events (default: discard).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Loops <= 0 {
		c.Loops = runtime.GOMAXPROCS(0)
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 10
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.PingInterval <= 0 || c.PingInterval >= c.IdleTimeout {
		c.PingInterval = c.IdleTimeout * 3 / 4
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 256 << 10
	}
	if c.Budget == nil {
		c.Budget = transport.NewOutputBudget(0)
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrClosed is returned by Upgrade once Shutdown has begun.
var ErrClosed = errors.New("ws: server closed")

// Server owns the epoll loops and every upgraded connection.
type Server struct {
	cfg      Config
	loops    []*loop
	open     atomic.Int64
	done     atomic.Bool // Shutdown began (once)
	draining atomic.Bool // Drain began: refuse upgrades
	wg       sync.WaitGroup

	statsMu sync.Mutex
	closes  map[transport.CloseCode]uint64
	expiry  expiryReasons

	// Message.WireDeflated builders, bound once (a method value per Send
	// would allocate).
	buildDeflated, buildDeflatedHead, buildDeflatedTail func(*transport.Message) []byte
}

// New starts the loops.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{cfg: cfg, closes: make(map[transport.CloseCode]uint64)}
	s.buildDeflated, s.buildDeflatedHead, s.buildDeflatedTail = s.buildDeflatedMsg, s.buildDeflatedHeadMsg, s.buildDeflatedTailMsg
	for i := 0; i < cfg.Loops; i++ {
		l, err := newLoop(s)
		if err != nil {
			for _, l := range s.loops {
				l.post(func() { l.stopping = true })
			}
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	cfg.Budget.Register(pool{s})
	for _, l := range s.loops {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			l.run()
		}()
	}
	return s, nil
}

// Upgrade completes the WebSocket handshake on an HTTP request and hands
// the socket to a loop. It selects the "phoenix" subprotocol when offered
// (phoenix.js 1.8 aborts if an offered subprotocol is not selected).
// Handshake errors are answered with their HTTP status (400, 426, …) by
// gobwas/ws before Upgrade returns them. newSession is called once, before
// the first message.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request, newSession func(transport.Conn) transport.Session) error {
	if s.done.Load() || s.draining.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return ErrClosed
	}
	up := ws.HTTPUpgrader{
		Protocol: func(p string) bool { return p == "phoenix" },
		Timeout:  s.cfg.HandshakeTimeout,
	}
	var ext wsflate.Extension
	if s.cfg.Compression {
		up.Negotiate = negotiate(&ext)
	}
	nc, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return err
	}
	// A conforming client waits for our 101 before sending frames, but a
	// fast one may not; whatever net/http already buffered is replayed into
	// the parser before the loop reads the socket.
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		early = append([]byte(nil), b...)
	}
	fd, err := detach(nc, s.cfg.SendBuffer)
	if err != nil {
		return fmt.Errorf("ws: detach socket: %w", err)
	}
	l := s.loops[fd%len(s.loops)] // fds are handed out in order: an even spread
	c := &conn{l: l, fd: int32(fd)}
	_, c.deflate = ext.Accepted()
	c.sess = newSession(c)
	s.open.Add(1)
	l.add(c, early)
	return nil
}

// detach takes the socket away from Go's netpoller: dup the fd, then close
// the net.Conn, whose close path removes the original fd from the runtime's
// epoll set. The dup shares the open file description (already O_NONBLOCK).
func detach(nc net.Conn, sndbuf int) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		nc.Close()
		return -1, errors.New("not a syscall.Conn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		nc.Close()
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = unix.Dup(int(f))
	}); err != nil {
		nc.Close()
		return -1, err
	}
	nc.Close()
	if derr != nil {
		return -1, derr
	}
	unix.CloseOnExec(fd)
	if sndbuf > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf) // a hint: the kernel's default still works
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Len is the number of open connections.
func (s *Server) Len() int { return int(s.open.Load()) }

// Stats is a snapshot of transport counters.
type Stats struct {
	Open   int
	Closes map[transport.CloseCode]uint64 // connections ended, by close code
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	m := make(map[transport.CloseCode]uint64, len(s.closes))
	for k, v := range s.closes {
		m[k] = v
	}
	return Stats{Open: s.Len(), Closes: m}
}

func (s *Server) countClose(code transport.CloseCode) {
	s.statsMu.Lock()
	s.closes[code]++
	s.statsMu.Unlock()
}

// CloseAll starts closing every open connection with code and reason.
func (s *Server) CloseAll(code transport.CloseCode, reason string) {
	for _, l := range s.loops {
		for _, c := range l.snapshot() {
			c.Close(code, reason)
		}
	}
}

// Drain refuses new upgrades and closes every connection with code, in
// evenly spaced batches over window, so that clients (which all reconnect
// at once after a close) arrive at the other gateways as a trickle rather
// than a storm. It returns when the last batch was closed or ctx ended.
func (s *Server) Drain(ctx context.Context, window time.Duration, code transport.CloseCode) {
	s.draining.Store(true)
	var all []*conn
	for _, l := range s.loops {
		all = append(all, l.snapshot()...)
	}
	const step = 100 * time.Millisecond
	batches := max(1, int(window/step))
	per := (len(all) + batches - 1) / batches
	t := time.NewTicker(step)
	defer t.Stop()
	for i := 0; i < len(all); i += per {
		for _, c := range all[i:min(len(all), i+per)] {
			c.Close(code, "server draining")
		}
		if i+per >= len(all) {
			break
		}
		select {
		case <-ctx.Done():
			for _, c := range all[i+per:] {
				c.Close(code, "server draining")
			}
			return
		case <-t.C:
		}
	}
}

// Shutdown refuses new upgrades, closes every connection with 1001 and
// waits for the close handshakes until ctx ends; connections still open
// then are dropped. The loops stop before Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.done.Swap(true) {
		s.wg.Wait()
		return nil
	}
	s.CloseAll(transport.CloseGoingAway, "server shutting down")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for s.open.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-tick.C:
		}
	}
	for _, l := range s.loops {
		l.post(func() { l.stopping = true })
	}
	s.wg.Wait()
	return err
}
