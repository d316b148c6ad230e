package phx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Wire names the client uses.
const (
	eventJoin      = "phx_join"
	eventLeave     = "phx_leave"
	eventReply     = "phx_reply"
	eventError     = "phx_error"
	eventClose     = "phx_close"
	eventHeartbeat = "heartbeat"
	eventOffset    = "fabric:offset"
	topicPhoenix   = "phoenix"
)

// Errors.
var (
	// ErrClosed: the Socket was closed with Close.
	ErrClosed = errors.New("phx: socket closed")
	// ErrDisconnected: the connection dropped (or the server reported
	// the channel crashed) while a push waited for its reply. The server
	// may or may not have handled the push.
	ErrDisconnected = errors.New("phx: connection or channel lost before the reply")
	// ErrChannelClosed: the channel was left, or the server closed it
	// (phx_close); it will not rejoin.
	ErrChannelClosed = errors.New("phx: channel closed")
	// ErrAlreadyJoined: the Socket already has a channel on this topic.
	ErrAlreadyJoined = errors.New("phx: topic already joined on this socket")
)

// ReplyError is a reply whose status is not "ok": a refused join
// ({"reason":"unauthorized"}), or a push the server rejected.
type ReplyError struct{ Reply Reply }

func (e *ReplyError) Error() string {
	return fmt.Sprintf("phx: %s reply: %s", e.Reply.Status, e.Reply.Response)
}

// HandshakeError is an HTTP refusal of the WebSocket upgrade (403: bad
// token, 503 or 429: the gateway is overloaded).
type HandshakeError struct{ Status int }

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("phx: websocket handshake refused with HTTP %d", e.Status)
}

// CloseError is the close frame a server ended the connection with.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("phx: connection closed by the server: %d %s", e.Code, e.Reason)
}

// Options configures a Socket. The zero value works.
type Options struct {
	// Params are appended to the connect URL's query string (e.g. token).
	// ParamsFunc, when set, is called before every connect instead, so a
	// refreshed token is picked up on reconnect.
	Params     url.Values
	ParamsFunc func() url.Values
	// AuthToken is sent the way phoenix.js 1.8 sends its authToken option
	// (a "base64url.bearer.phx.<base64>" subprotocol), keeping it out of
	// URLs and access logs.
	AuthToken string
	// Header holds extra handshake headers (Origin, cookies...).
	Header http.Header
	// TLSConfig is used for wss:// endpoints (nil: system roots, the
	// endpoint's host name).
	TLSConfig *tls.Config
	// NetDial replaces the TCP dialer (custom resolvers, proxies, source
	// addresses).
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)

	DialTimeout       time.Duration // TCP + TLS + upgrade; default 10 s
	WriteTimeout      time.Duration // per frame; default 10 s
	HeartbeatInterval time.Duration // default 30 s (Phoenix's); negative: no heartbeats
	JoinTimeout       time.Duration // an automatic rejoin's wait for its reply; default 10 s
	// Timeout bounds Join, Push and Leave calls whose ctx has no deadline
	// (a reply can be lost for good: a server that restarted, a push the
	// server ignored). Default 10 s, like phoenix.js's push timeout.
	Timeout   time.Duration
	Reconnect Backoff // zero: DefaultReconnect
	Rejoin    Backoff // zero: DefaultRejoin
	// MaxMessageSize bounds one received message; a bigger one closes the
	// connection (1009) and reconnects. Default 16 MiB.
	MaxMessageSize int64

	// OnConnect is called after every successful (re)connect, OnDisconnect
	// after every lost connection (err says why: *CloseError, a heartbeat
	// timeout, a network error). OnError reports what the client ignored
	// or retries on its own: undecodable frames, failed reconnects,
	// refused rejoins. All three run on the client's goroutines: return
	// quickly.
	OnConnect    func()
	OnDisconnect func(err error)
	OnError      func(err error)
}

// Socket is one Phoenix connection with automatic reconnect; its channels
// rejoin (and resume) after every reconnect. Safe for concurrent use.
//
// Goroutines: one reads the connection and runs every handler, in order;
// one runs timers (heartbeats, reconnects, rejoins). Handlers must not
// block, and must not wait for a Join, Push or Leave themselves (the
// reply they wait for would be read by the goroutine they block): start
// a goroutine for that.
type Socket struct {
	endpoint *url.URL
	opts     Options

	wmu  sync.Mutex // serializes writes; guards pbuf and fbuf
	pbuf []byte
	fbuf bytes.Buffer

	mu          sync.Mutex
	conn        net.Conn // nil while disconnected
	closed      bool
	channels    map[string]*Channel
	pending     map[string]*pending
	ref         uint64
	hbRef       string // outstanding heartbeat
	hbAt        time.Time
	attempts    int // reconnects that failed since the last healthy connection
	reconnectAt time.Time

	kick   chan struct{}
	done   chan struct{}
	ctx    context.Context // cancelled by Close: ends a reconnect's dial
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type result struct {
	reply Reply
	err   error
}

// pending is a request waiting for its phx_reply.
type pending struct {
	ch       *Channel    // join requests: the channel joining
	done     chan result // pushes and leaves (capacity 1)
	deadline time.Time   // joins: when to give up and rejoin
	pushedOn *Channel    // pushes: their channel (failed if it errors)
}

// bound gives ctx the socket's Timeout when it has no deadline.
func (s *Socket) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.Timeout)
}

// Dial connects to a Phoenix endpoint such as wss://example.com/socket
// ("/websocket" and vsn=2.0.0 are added) and keeps the connection up until
// Close: a lost connection is redialled with jittered exponential backoff
// and every channel rejoins. The first attempt is made before Dial
// returns, so a bad URL or a refused token fails here (a *HandshakeError).
func Dial(ctx context.Context, endpoint string, opts Options) (*Socket, error) {
	u, err := endpointURL(endpoint)
	if err != nil {
		return nil, err
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 30 * time.Second
	}
	if opts.JoinTimeout <= 0 {
		opts.JoinTimeout = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Reconnect == (Backoff{}) {
		opts.Reconnect = DefaultReconnect
	}
	if opts.Rejoin == (Backoff{}) {
		opts.Rejoin = DefaultRejoin
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = 16 << 20
	}
	s := &Socket{
		endpoint: u,
		opts:     opts,
		channels: map[string]*Channel{},
		pending:  map[string]*pending{},
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	conn, br, err := s.dial(ctx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.install(conn, br)
	s.wg.Add(1)
	go s.loop()
	if f := s.opts.OnConnect; f != nil {
		f()
	}
	return s, nil
}

// endpointURL turns ws(s)://host/socket (or http(s)://) into the
// WebSocket URL phoenix.js would use.
func endpointURL(endpoint string) (*url.URL, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("phx: endpoint: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("phx: endpoint %q: scheme must be ws, wss, http or https", endpoint)
	}
	if !strings.HasSuffix(u.Path, "/websocket") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/websocket"
	}
	return u, nil
}

func (s *Socket) dial(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	u := *s.endpoint
	q := u.Query()
	params := s.opts.Params
	if s.opts.ParamsFunc != nil {
		params = s.opts.ParamsFunc()
	}
	for k, vs := range params {
		q[k] = append([]string(nil), vs...)
	}
	q.Set("vsn", "2.0.0")
	u.RawQuery = q.Encode()

	var status int
	d := ws.Dialer{
		Timeout:       s.opts.DialTimeout,
		TLSConfig:     s.opts.TLSConfig,
		NetDial:       s.opts.NetDial,
		OnStatusError: func(code int, _ []byte, _ io.Reader) { status = code },
	}
	if s.opts.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(s.opts.Header)
	}
	if s.opts.AuthToken != "" {
		d.Protocols = []string{"phoenix", "base64url.bearer.phx." + base64.RawStdEncoding.EncodeToString([]byte(s.opts.AuthToken))}
	}
	conn, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		if status != 0 {
			return nil, nil, &HandshakeError{Status: status}
		}
		return nil, nil, fmt.Errorf("phx: dial %s://%s%s: %w", u.Scheme, u.Host, u.Path, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	return conn, br, nil
}

// install makes conn the current connection and starts its reader.
func (s *Socket) install(conn net.Conn, br *bufio.Reader) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return false
	}
	s.conn = conn
	s.hbRef = ""
	s.hbAt = time.Now().Add(s.opts.HeartbeatInterval)
	s.mu.Unlock()
	s.wg.Add(1)
	go s.read(conn, br)
	return true
}

// Connected reports whether the socket has a connection right now.
func (s *Socket) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// Close leaves nothing behind: it closes the connection (close code 1000),
// stops reconnecting and fails every waiting Join, Push and Leave with
// ErrClosed. Do not call it from a handler (it waits for the reader).
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conn := s.conn
	s.conn = nil
	failed := s.takePendingLocked()
	for _, ch := range s.channels {
		ch.endLocked()
	}
	s.channels = map[string]*Channel{}
	s.mu.Unlock()
	close(s.done)
	s.cancel()
	for _, p := range failed {
		p.done <- result{err: ErrClosed}
	}
	if conn != nil {
		_ = s.writeFrame(conn, ws.OpClose, func(b []byte) ([]byte, error) { // best effort: the connection is closed next
			return binary.BigEndian.AppendUint16(b, 1000), nil
		})
		conn.Close()
	}
	s.wg.Wait()
	return nil
}

// takePendingLocked empties the reply table and returns the requests a
// caller waits on (pushes and leaves); joins are redone by the rejoin.
func (s *Socket) takePendingLocked() []*pending {
	var waiting []*pending
	for _, p := range s.pending {
		if p.done != nil {
			waiting = append(waiting, p)
		}
	}
	clear(s.pending)
	return waiting
}

func (s *Socket) nextRefLocked() string {
	s.ref++
	return strconv.FormatUint(s.ref, 10)
}

func (s *Socket) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Socket) reportError(err error) {
	if f := s.opts.OnError; f != nil {
		f(err)
	}
}

// writeFrame writes one masked frame whose payload build appends. One
// frame, one Write, into buffers reused from frame to frame.
func (s *Socket) writeFrame(conn net.Conn, op ws.OpCode, build func([]byte) ([]byte, error)) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	p, err := build(s.pbuf[:0])
	if err != nil {
		return err
	}
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p)), Masked: true, Mask: ws.NewMask()}
	s.fbuf.Reset()
	if err := ws.WriteHeader(&s.fbuf, h); err != nil {
		return err
	}
	start := s.fbuf.Len()
	s.fbuf.Write(p)
	ws.Cipher(s.fbuf.Bytes()[start:], h.Mask, 0)
	conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	_, err = conn.Write(s.fbuf.Bytes())
	// Keep the buffers for the next frame unless one huge push grew them.
	if cap(p) <= 1<<20 {
		s.pbuf = p[:0]
	} else {
		s.pbuf = nil
		s.fbuf = bytes.Buffer{}
	}
	return err
}

func (s *Socket) writeText(conn net.Conn, joinRef, ref, topic, event string, payload []byte) error {
	return s.writeFrame(conn, ws.OpText, func(b []byte) ([]byte, error) {
		return appendText(b, joinRef, ref, topic, event, payload), nil
	})
}

// read is a connection's reader goroutine.
func (s *Socket) read(conn net.Conn, br *bufio.Reader) {
	defer s.wg.Done()
	err := s.readLoop(conn, br)
	conn.Close()
	s.lost(conn, err)
}

func (s *Socket) readLoop(conn net.Conn, br *bufio.Reader) error {
	var msg []byte // a fragmented message being assembled
	var msgOp ws.OpCode
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return err
		}
		if h.Length > s.opts.MaxMessageSize || int64(len(msg))+h.Length > s.opts.MaxMessageSize {
			_ = s.writeFrame(conn, ws.OpClose, func(b []byte) ([]byte, error) { // best effort: the connection is closed next
				return binary.BigEndian.AppendUint16(b, uint16(ws.StatusMessageTooBig)), nil
			})
			return fmt.Errorf("phx: message over MaxMessageSize (%d bytes)", s.opts.MaxMessageSize)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = s.writeFrame(conn, ws.OpPong, func(b []byte) ([]byte, error) { return append(b, p...), nil }) // a failed write ends the next read too
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			ce := &CloseError{Code: 1005}
			if len(p) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(p))
				ce.Reason = string(p[2:])
			}
			// Answer the close like a browser would.
			_ = s.writeFrame(conn, ws.OpClose, func(b []byte) ([]byte, error) { return append(b, p[:min(2, len(p))]...), nil }) // the read loop ends next anyway
			return ce
		case ws.OpContinuation:
			msg = append(msg, p...)
		default:
			msg, msgOp = p, h.OpCode
		}
		if !h.Fin {
			if h.OpCode != ws.OpContinuation {
				msg = append([]byte(nil), p...)
			}
			continue
		}
		data := msg
		msg = nil
		var f frame
		if msgOp == ws.OpBinary {
			f, err = decodeBinary(data)
		} else {
			f, err = decodeText(data)
		}
		if err != nil {
			s.reportError(err)
			continue
		}
		s.handle(f)
	}
}

// lost runs when a connection ends: pushes waiting for replies fail,
// channels wait for the next connection to rejoin, a reconnect is
// scheduled.
func (s *Socket) lost(conn net.Conn, err error) {
	s.mu.Lock()
	if s.conn != conn {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	s.hbRef = ""
	failed := s.takePendingLocked()
	for _, ch := range s.channels {
		ch.disconnectedLocked()
	}
	s.reconnectAt = time.Now().Add(s.opts.Reconnect.Delay(s.attempts))
	s.attempts++
	s.mu.Unlock()
	for _, p := range failed {
		p.done <- result{err: ErrDisconnected}
	}
	if f := s.opts.OnDisconnect; f != nil {
		f(err)
	}
	s.wake()
}

// handle routes one frame; it runs on the reader goroutine.
func (s *Socket) handle(f frame) {
	if f.event == eventReply {
		s.mu.Lock()
		p := s.pending[f.ref]
		delete(s.pending, f.ref)
		if f.topic == topicPhoenix && f.ref != "" && f.ref == s.hbRef {
			s.hbRef = ""
			s.attempts = 0 // the gateway answers: this connection is healthy
		}
		s.mu.Unlock()
		if p == nil {
			return
		}
		r := parseReply(f)
		if p.ch != nil {
			p.ch.joinReply(f.joinRef, r)
		} else {
			p.done <- result{reply: r, err: r.err()}
		}
		return
	}
	s.mu.Lock()
	ch := s.channels[f.topic]
	if ch == nil || (f.joinRef != "" && f.joinRef != ch.joinRef) {
		// Not ours, or a previous instance's (phoenix.js drops those too).
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	ch.handle(f)
}

// loop is the timer goroutine: reconnects, heartbeats, rejoins.
func (s *Socket) loop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		wait := s.nextWakeLocked(time.Now())
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-s.done:
			return
		case <-s.kick:
		case <-timer.C:
		}
		s.tick()
	}
}

func (s *Socket) nextWakeLocked(now time.Time) time.Duration {
	next := now.Add(time.Hour)
	earlier := func(t time.Time) {
		if t.Before(next) {
			next = t
		}
	}
	if s.conn == nil {
		earlier(s.reconnectAt)
	} else {
		if s.opts.HeartbeatInterval > 0 {
			earlier(s.hbAt)
		}
		for _, p := range s.pending {
			if p.ch != nil {
				earlier(p.deadline)
			}
		}
		for _, ch := range s.channels {
			if ch.state == stNeedJoin {
				earlier(ch.rejoinAt)
			}
		}
	}
	return max(next.Sub(now), 0)
}

func (s *Socket) tick() {
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.conn == nil {
		if now.Before(s.reconnectAt) {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if !s.reconnect() {
			return
		}
		now = time.Now()
		s.mu.Lock()
		if s.conn == nil {
			s.mu.Unlock()
			return
		}
	}
	conn := s.conn
	var hbRef string
	if s.opts.HeartbeatInterval > 0 && !now.Before(s.hbAt) {
		if s.hbRef != "" {
			// No reply to the last heartbeat in a whole interval: the
			// connection is dead even if TCP has not noticed.
			s.mu.Unlock()
			conn.Close()
			return
		}
		hbRef = s.nextRefLocked()
		s.hbRef = hbRef
		s.hbAt = now.Add(s.opts.HeartbeatInterval)
	}
	for ref, p := range s.pending {
		if p.ch != nil && !now.Before(p.deadline) {
			delete(s.pending, ref)
			p.ch.joinFailedLocked(now)
		}
	}
	var joins []*Channel
	for _, ch := range s.channels {
		if ch.state == stNeedJoin && !now.Before(ch.rejoinAt) {
			joins = append(joins, ch)
		}
	}
	s.mu.Unlock()
	if hbRef != "" {
		// A failed write breaks the connection, which the read loop reports;
		// an unanswered heartbeat is caught by the next tick.
		_ = s.writeText(conn, "", hbRef, topicPhoenix, eventHeartbeat, nil)
	}
	for _, ch := range joins {
		ch.sendJoin()
	}
}

func (s *Socket) reconnect() bool {
	conn, br, err := s.dial(s.ctx)
	if err != nil {
		s.mu.Lock()
		s.reconnectAt = time.Now().Add(s.opts.Reconnect.Delay(s.attempts))
		s.attempts++
		s.mu.Unlock()
		s.reportError(err)
		return false
	}
	if !s.install(conn, br) {
		return false
	}
	if f := s.opts.OnConnect; f != nil {
		f()
	}
	return true
}
