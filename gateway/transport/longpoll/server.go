package longpoll

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// Config tunes the transport. Zero fields take the documented defaults.
type Config struct {
	// Secret is the HMAC key for session tokens. When nil a random key is
	// drawn per process: tokens issued by another process then do not
	// verify and take the new-session path. Give every gateway behind one
	// load balancer the same secret to have them recognise each other's
	// tokens (which then get the "session gone" 410 instead).
	Secret []byte
	// PollWindow is how long a GET is held waiting for frames (default
	// 10 s). It must stay well below the client's 20 s longpollerTimeout;
	// values ≥ 20 s are clamped to 15 s.
	PollWindow time.Duration
	// IdleTimeout ends a session that has had no GET held for this long
	// (default 1.5 × PollWindow, as Phoenix).
	IdleTimeout time.Duration
	// MaxBuffered bounds the bytes buffered for a session while no GET
	// takes them (default 256 KiB). Over it the session ends with 4008;
	// the client reconnects and resumes by offset.
	MaxBuffered int
	// A session that has never been polled may buffer only
	// MaxBufferedUnpolled bytes (default MaxBuffered / 4) and ends (4000)
	// when no GET came within FirstPollTimeout of its opening (default
	// 5 s, at most IdleTimeout): phoenix.js polls as soon as it has its
	// session token, so only a client that opens sessions it does not
	// use (to hold the server's memory) meets these.
	MaxBufferedUnpolled int
	FirstPollTimeout    time.Duration
	// Gzip compresses poll answers of at least GzipMin bytes for clients
	// that accept gzip (browsers and Node's fetch do).
	Gzip    bool
	GzipMin int
	// MaxPostBytes bounds one POST body (default 1 MiB). Over it: 413.
	MaxPostBytes int64
	// MaxLines bounds the lines of one POST (default 1000; phoenix.js sends
	// at most 100). Over it: 413.
	MaxLines int
	// MaxSessions bounds the sessions of this process (default 100 000).
	// A session-opening GET over it gets {"status":500}.
	MaxSessions int
	// Budget is the process's output budget, shared with the other
	// transports: every buffered byte counts until a poll takes it or
	// the session drops it (transport.OutputBudget). nil: one of this
	// server's own without a limit.
	Budget *transport.OutputBudget
	// AllowOrigin, when set, is asked about every request that carries an
	// Origin header; a refused one gets HTTP 403 {"status":403}. Default:
	// every origin is allowed.
	AllowOrigin func(r *http.Request, origin string) bool
	// Recheck, when set, is asked about every poll and POST of an existing
	// session, with the request as the user sent it minus our session
	// token (as accept sees it) and the session accept built. false
	// answers HTTP 403 {"status":403} and the session stays: the session
	// token is then useless without the credentials it was opened with.
	Recheck func(r *http.Request, sess transport.Session) bool
	// Logger receives transport events (default: discard).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if len(c.Secret) == 0 {
		c.Secret = make([]byte, 32)
		if _, err := rand.Read(c.Secret); err != nil {
			panic("longpoll: crypto/rand failed: " + err.Error())
		}
	}
	if c.PollWindow <= 0 {
		c.PollWindow = 10 * time.Second
	}
	if c.PollWindow >= 20*time.Second {
		c.PollWindow = 15 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = c.PollWindow * 3 / 2
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 256 << 10
	}
	if c.MaxBufferedUnpolled <= 0 || c.MaxBufferedUnpolled > c.MaxBuffered {
		c.MaxBufferedUnpolled = c.MaxBuffered / 4
	}
	if c.FirstPollTimeout <= 0 {
		c.FirstPollTimeout = 5 * time.Second
	}
	c.FirstPollTimeout = min(c.FirstPollTimeout, c.IdleTimeout)
	if c.MaxPostBytes <= 0 {
		c.MaxPostBytes = 1 << 20
	}
	if c.MaxLines <= 0 {
		c.MaxLines = 1000
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100_000
	}
	if c.Budget == nil {
		c.Budget = transport.NewOutputBudget(0)
	}
	if c.AllowOrigin == nil {
		c.AllowOrigin = func(*http.Request, string) bool { return true }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server holds every LongPoll session of the process.
type Server struct {
	cfg Config

	mu       sync.Mutex
	sessions map[string]*lpSession // live sessions and ended ones still draining

	live    atomic.Int64 // sessions created (or being created) and not ended
	closing atomic.Bool
	closers sync.WaitGroup // HandleClose calls in flight

	opened        atomic.Uint64
	refused       atomic.Uint64
	gone          atomic.Uint64
	idleExpired   atomic.Uint64
	overflows     atomic.Uint64
	droppedBinary atomic.Uint64
	badPosts      atomic.Uint64
	forbidden     atomic.Uint64

	statsMu sync.Mutex
	closes  map[transport.CloseCode]uint64
}

// New returns a Server. It starts no goroutine.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:      cfg,
		sessions: make(map[string]*lpSession),
		closes:   make(map[transport.CloseCode]uint64),
	}
	cfg.Budget.Register(pool{s})
	return s
}

// Len returns the number of live sessions.
func (s *Server) Len() int { return int(s.live.Load()) }

// Stats is a snapshot of the transport's counters.
type Stats struct {
	Sessions      int    // live sessions
	Opened        uint64 // sessions created
	Refused       uint64 // session-opening GETs refused by accept (403)
	Gone          uint64 // requests for an unknown or ended session (410)
	IdleExpired   uint64 // sessions ended because nobody polled (4000)
	Overflows     uint64 // sessions ended because their buffer overflowed (4008)
	DroppedBinary uint64 // binary messages dropped (never sent on LongPoll)
	BadPosts      uint64 // POSTs answered 400 or 413
	Forbidden     uint64 // polls and POSTs Recheck refused (403)
	Closes        map[transport.CloseCode]uint64
}

// Stats returns a snapshot.
func (s *Server) Stats() Stats {
	st := Stats{
		Sessions:      s.Len(),
		Opened:        s.opened.Load(),
		Refused:       s.refused.Load(),
		Gone:          s.gone.Load(),
		IdleExpired:   s.idleExpired.Load(),
		Overflows:     s.overflows.Load(),
		DroppedBinary: s.droppedBinary.Load(),
		BadPosts:      s.badPosts.Load(),
		Forbidden:     s.forbidden.Load(),
		Closes:        make(map[transport.CloseCode]uint64),
	}
	s.statsMu.Lock()
	for k, v := range s.closes {
		st.Closes[k] = v
	}
	s.statsMu.Unlock()
	return st
}

func (s *Server) countClose(code transport.CloseCode) {
	s.statsMu.Lock()
	s.closes[code]++
	s.statsMu.Unlock()
}

func (s *Server) lookup(id string) *lpSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

func (s *Server) unlist(c *lpSession) {
	s.mu.Lock()
	if s.sessions[c.id] == c {
		delete(s.sessions, c.id)
	}
	s.mu.Unlock()
}

// Shutdown ends every session with 1001 (HandleClose(CloseGoingAway)): held
// GETs answer 410 at once and so does every later poll; session-opening GETs
// get {"status":500} with HTTP 503. It waits for the HandleClose calls to
// return, or for ctx. The HTTP server is the caller's: stop it afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	all := make([]*lpSession, 0, len(s.sessions))
	for _, c := range s.sessions {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.end(transport.CloseGoingAway, false)
	}
	done := make(chan struct{})
	go func() {
		s.closers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Serve handles GET, POST and OPTIONS on the LongPoll endpoint
// (/socket/longpoll).
//
// accept is called on a session-opening GET (one whose last `token` query
// value is not a session token this server signed). It authenticates the
// request (vsn, the user's params, X-Phoenix-AuthToken, origin) and returns
// the function that builds the Phoenix session on the new transport.Conn, or
// an error, answered {"status":403}. The request accept sees has our own
// (unverifiable) session token removed from its query, so the user's params
// are all that is left. accept is never called for polls and POSTs of an
// existing session.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, accept func(r *http.Request) (newSession func(transport.Conn) transport.Session, err error)) {
	origin := r.Header.Get("Origin")
	h := w.Header()
	if origin != "" && !s.cfg.AllowOrigin(r, origin) {
		writeStatus(w, http.StatusForbidden, 403)
		return
	}
	if origin != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	} else {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	switch r.Method {
	case http.MethodGet:
		h.Set("Cache-Control", "no-store")
		s.serveGet(w, r, accept)
	case http.MethodPost:
		s.servePost(w, r)
	case http.MethodOptions:
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
		}
		h.Set("Access-Control-Allow-Methods", "get, post, options")
		h.Set("Access-Control-Max-Age", "3600")
		w.WriteHeader(http.StatusOK)
	default:
		h.Set("Allow", "GET, POST, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, accept func(*http.Request) (func(transport.Conn) transport.Session, error)) {
	tok, idx, found := lastToken(r.URL.RawQuery)
	if found {
		if id, ok := verifyToken(s.cfg.Secret, tok); ok {
			if c := s.lookup(id); c != nil {
				if !s.recheck(w, r, c, idx) {
					return
				}
				s.poll(w, r, c)
				return
			}
			// Our token, but the session is over (expired, ended, or from
			// before a restart with the same secret). The client holds a
			// token, so a 410 means "session gone": it closes with 3410,
			// reconnects with a fresh transport (no token) and rejoins
			// every channel. It ignores the token of this answer, so no
			// session is created for it.
			s.gone.Add(1)
			writePoll(w, 410, "", nil)
			return
		}
	}
	s.open(w, r, accept, tok, idx, found)
}

// recheck asks Config.Recheck about a request of session c whose session
// token is the idx-th query component, and answers 403 when refused.
func (s *Server) recheck(w http.ResponseWriter, r *http.Request, c *lpSession, idx int) bool {
	if s.cfg.Recheck == nil {
		return true
	}
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return true
	}
	ar := r.WithContext(r.Context())
	u := *r.URL
	u.RawQuery = withoutComponent(r.URL.RawQuery, idx)
	ar.URL = &u
	if s.cfg.Recheck(ar, sess) {
		return true
	}
	s.forbidden.Add(1)
	writeStatus(w, http.StatusForbidden, 403)
	return false
}

// open runs the new-session path.
func (s *Server) open(w http.ResponseWriter, r *http.Request, accept func(*http.Request) (func(transport.Conn) transport.Session, error), tok string, idx int, found bool) {
	if s.closing.Load() {
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusServiceUnavailable, 500)
		return
	}
	if s.live.Add(1) > int64(s.cfg.MaxSessions) {
		s.live.Add(-1)
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusServiceUnavailable, 500)
		return
	}
	ar := r
	if found && looksLikeToken(tok) {
		// A tampered or foreign session token: not the user's param.
		ar = r.WithContext(r.Context())
		u := *r.URL
		u.RawQuery = withoutComponent(r.URL.RawQuery, idx)
		ar.URL = &u
	}
	newSession, err := accept(ar)
	if err != nil || newSession == nil {
		s.live.Add(-1)
		s.refused.Add(1)
		s.cfg.Logger.Debug("longpoll session refused", "remote", r.RemoteAddr, "err", err)
		// Refusals can repeat at will on one keep-alive connection, each
		// costing a request parse and an accept; ending the connection
		// makes the next attempt pay for a new one (and meet the
		// per-address budgets again).
		w.Header().Set("Connection", "close")
		writeStatus(w, http.StatusOK, 403)
		return
	}
	id := newSessionID()
	c := &lpSession{srv: s, id: id, token: signToken(s.cfg.Secret, id), remote: r.RemoteAddr}
	sess := newSession(c)

	c.mu.Lock()
	c.sess = sess
	if c.ended {
		// Closed while being built: nothing to hand to the client.
		deliver := c.takeCloseLocked()
		c.mu.Unlock()
		if deliver != nil {
			deliver.HandleClose(c.code)
		}
		writeStatus(w, http.StatusOK, 500)
		return
	}
	c.listed = true
	c.idleAt = time.Now().Add(s.cfg.FirstPollTimeout)
	c.timer = time.AfterFunc(s.cfg.FirstPollTimeout, c.idleFired)
	s.mu.Lock() // lock order: session, then server
	s.sessions[id] = c
	s.mu.Unlock()
	c.mu.Unlock()
	s.opened.Add(1)
	if s.closing.Load() {
		// Shutdown began after the check above and may have missed us.
		c.end(transport.CloseGoingAway, false)
		writeStatus(w, http.StatusServiceUnavailable, 500)
		return
	}
	s.cfg.Logger.Debug("longpoll session opened", "session", id, "remote", r.RemoteAddr)
	writePoll(w, 410, c.token, nil)
}

// poll answers a GET of a known session.
func (s *Server) poll(w http.ResponseWriter, r *http.Request, c *lpSession) {
	if s.cfg.Gzip && acceptsGzip(r) {
		w = &gzipPoll{ResponseWriter: w, min: s.cfg.GzipMin, status: http.StatusOK}
	}
	c.mu.Lock()
	c.polled = true
	if c.ended {
		// Draining: the frames buffered before the end, once.
		frames := c.takeLocked()
		unlist := c.listed
		c.listed = false
		c.mu.Unlock()
		if unlist {
			s.unlist(c)
		}
		if len(frames) > 0 {
			writePoll(w, 200, c.token, frames)
		} else {
			s.gone.Add(1)
			writePoll(w, 410, "", nil)
		}
		return
	}
	if len(c.buf) > 0 {
		frames := c.takeLocked()
		c.idleAt = time.Now().Add(s.cfg.IdleTimeout)
		c.timer.Reset(s.cfg.IdleTimeout)
		c.mu.Unlock()
		writePoll(w, 200, c.token, frames)
		return
	}
	if old := c.waiter; old != nil {
		old.replaced = true
		old.fire()
	}
	wt := &waiter{wake: make(chan struct{})}
	c.waiter = wt
	c.mu.Unlock()

	window := time.NewTimer(s.cfg.PollWindow)
	select {
	case <-wt.wake:
	case <-window.C:
	case <-r.Context().Done():
	}
	window.Stop()

	c.mu.Lock()
	c.pollDoneLocked(wt)
	if wt.replaced {
		c.mu.Unlock()
		writePoll(w, 204, c.token, nil)
		return
	}
	if r.Context().Err() != nil && !c.ended {
		c.mu.Unlock() // the client is gone: keep the frames for its next poll
		return
	}
	frames := c.takeLocked()
	ended := c.ended
	unlist := ended && c.listed
	if unlist {
		c.listed = false
	}
	c.mu.Unlock()
	if unlist {
		s.unlist(c)
	}
	switch {
	case len(frames) > 0:
		writePoll(w, 200, c.token, frames)
	case ended:
		s.gone.Add(1)
		writePoll(w, 410, "", nil)
	default:
		writePoll(w, 204, c.token, nil)
	}
}

type inFrame struct {
	binary bool
	data   []byte
}

func (s *Server) servePost(w http.ResponseWriter, r *http.Request) {
	tok, idx, _ := lastToken(r.URL.RawQuery)
	var c *lpSession
	if id, ok := verifyToken(s.cfg.Secret, tok); ok {
		c = s.lookup(id)
	}
	if c == nil {
		s.gone.Add(1)
		writeStatus(w, http.StatusOK, 410)
		return
	}
	if !s.recheck(w, r, c, idx) {
		return
	}
	if r.ContentLength > s.cfg.MaxPostBytes {
		s.tooBig(w, c)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxPostBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.tooBig(w, c)
			return
		}
		s.badPosts.Add(1)
		writeStatus(w, http.StatusBadRequest, 400)
		return
	}
	frames, tooMany, bad := s.splitBody(r.Header.Get("Content-Type"), body)
	if tooMany {
		s.tooBig(w, c)
		return
	}
	if bad {
		// Nothing of the body is dispatched and the session stays; phoenix.js
		// gives up on the transport after any non-200 POST, so an abandoned
		// session idles out.
		s.badPosts.Add(1)
		writeStatus(w, http.StatusBadRequest, 400)
		return
	}

	c.dispatch.Lock()
	defer c.dispatch.Unlock()
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		s.gone.Add(1)
		writeStatus(w, http.StatusOK, 410)
		return
	}
	c.dispatching = true
	sess := c.sess
	c.mu.Unlock()
	for _, f := range frames {
		sess.HandleMessage(f.binary, f.data)
		c.mu.Lock()
		ended := c.ended
		c.mu.Unlock()
		if ended {
			break // the session closed itself: drop the rest
		}
	}
	c.mu.Lock()
	c.dispatching = false
	ended, code := c.ended, c.code
	deliver := c.takeCloseLocked()
	c.mu.Unlock()
	if deliver != nil {
		s.closers.Add(1)
		deliver.HandleClose(code)
		s.closers.Done()
	}
	if ended {
		s.gone.Add(1)
		writeStatus(w, http.StatusOK, 410)
		return
	}
	writeStatus(w, http.StatusOK, 200)
}

// tooBig answers 413 and ends the session: phoenix.js abandons the transport
// after any non-200 POST, so keeping it would only hold its channels for an
// idle period.
func (s *Server) tooBig(w http.ResponseWriter, c *lpSession) {
	s.badPosts.Add(1)
	writeStatus(w, http.StatusRequestEntityTooLarge, 413)
	c.end(transport.CloseMessageTooBig, false)
}

// splitBody turns a POST body into frames. With Content-Type
// application/x-ndjson the body is split on "\n" (a trailing "\r" is
// dropped, empty lines are skipped); otherwise (as Phoenix) it is one
// message. A line starting with '[' is a text frame; any other is the
// standard padded base64 of a binary frame.
func (s *Server) splitBody(contentType string, body []byte) (frames []inFrame, tooMany, bad bool) {
	mt, _, _ := mime.ParseMediaType(contentType)
	lines := [][]byte{body}
	if mt == "application/x-ndjson" {
		lines = bytes.Split(body, []byte{'\n'})
	}
	frames = make([]inFrame, 0, len(lines))
	for _, l := range lines {
		l = bytes.TrimSuffix(l, []byte{'\r'})
		if len(l) == 0 {
			continue
		}
		if len(frames) == s.cfg.MaxLines {
			return nil, true, false
		}
		if l[0] == '[' {
			frames = append(frames, inFrame{data: l})
			continue
		}
		d := make([]byte, base64.StdEncoding.DecodedLen(len(l)))
		n, err := base64.StdEncoding.Strict().Decode(d, l)
		if err != nil || n == 0 {
			return nil, false, true
		}
		frames = append(frames, inFrame{binary: true, data: d[:n]})
	}
	return frames, false, false
}

// writeStatus writes {"status":N} with the given HTTP status.
func writeStatus(w http.ResponseWriter, httpStatus, status int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	b := append([]byte(`{"status":`), strconv.Itoa(status)...)
	w.Write(append(b, '}'))
}

// writePoll writes a GET answer (always HTTP 200):
// {"status":N,"token":T,"messages":["<frame>",…]}; each frame is a JSON
// string holding the v2 text frame.
func writePoll(w http.ResponseWriter, status int, token string, frames [][]byte) {
	n := 48 + len(token)
	for _, f := range frames {
		n += len(f) + len(f)/8 + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"token":`...)
	b = append(b, '"')
	b = append(b, token...) // our tokens are base64url and dots: nothing to escape
	b = append(b, '"')
	b = append(b, `,"messages":[`...)
	for i, f := range frames {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f)
	}
	b = append(b, "]}"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD
// (as encoding/json does); HTML characters are not escaped.
func appendJSONString(b []byte, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
