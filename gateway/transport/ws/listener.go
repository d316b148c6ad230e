package ws

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// headSize bounds an upgrade request's head read outside net/http. Browser
// upgrade requests are well under 2 KiB; a longer head (huge cookies) is
// handed to net/http, which takes up to its own limit.
const headSize = 4 << 10

var headPool = sync.Pool{New: func() any { b := make([]byte, headSize); return &b }}

// SplitListener wraps the client listener so that WebSocket upgrades skip
// net/http. net/http gives every connection 4 KiB read and 4 KiB write
// buffers; a hijack hands them over for good, so each upgraded connection
// left about 8 KiB of garbage behind (BenchmarkIdleConnHeap's alloc-B/conn),
// which is what a connect storm's RSS was made of. Here a connection's first
// bytes are read into a pooled buffer: when they are a GET for path with
// "Upgrade: websocket", the request is parsed and served by h (the same
// handler net/http would call, so admission and the upgrade are unchanged)
// through a minimal ResponseWriter that can be hijacked; anything else is
// handed to net/http through the returned listener, with the bytes already
// read replayed first.
//
// timeout bounds reading the request head (slowloris) and is cleared before
// a connection is handed to net/http, which applies its own.
func SplitListener(ln net.Listener, path string, h http.Handler, timeout time.Duration, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &splitListener{Listener: ln, prefix: []byte("GET " + path), h: h, timeout: timeout, log: log,
		conns: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

type splitListener struct {
	net.Listener
	prefix  []byte // "GET /socket/websocket"
	h       http.Handler
	timeout time.Duration
	log     *slog.Logger

	conns chan net.Conn // for net/http
	done  chan struct{} // closed when the accept loop ended
	err   error         // why it ended; set before done is closed
}

func (s *splitListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				// Out of descriptors: wait, as net/http does, rather
				// than spin or give up the listener.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("ws: accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			s.err = err
			close(s.done)
			return
		}
		backoff = 0
		go s.sniff(c)
	}
}

// Accept implements net.Listener for net/http.
func (s *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, s.err
	}
}

// sniff reads the head of c's first request and routes the connection.
func (s *splitListener) sniff(c net.Conn) {
	bp := headPool.Get().(*[]byte)
	buf := *bp
	defer headPool.Put(bp)
	c.SetReadDeadline(time.Now().Add(s.timeout))
	n, end := 0, -1
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if !couldBe(buf[:n], s.prefix) {
			break // not our endpoint: net/http's business
		}
		if end = headEnd(buf[:n]); end >= 0 {
			break
		}
		if err != nil {
			c.Close() // timed out or gone before finishing a head
			return
		}
	}
	if end < 0 || !s.serveUpgrade(c, buf[:end], buf[end:n]) {
		c.SetReadDeadline(time.Time{})
		s.handOff(c, buf[:n])
	}
}

// headEnd returns the length of the request head at the start of b, up to
// and including its empty line, or -1 when b does not hold all of it. Lines
// end in LF with an optional CR before it, as net/http reads them: looking
// for CRLFCRLF alone would hang a client that ends lines with a bare LF,
// and would take a later CRLFCRLF (inside the early frames) for the end.
func headEnd(b []byte) int {
	end := -1
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.Index(b, []byte("\n\r\n")); i >= 0 && (end < 0 || i+3 < end) {
		end = i + 3
	}
	return end
}

// couldBe reports whether p can still be (or is) a request line starting
// with prefix followed by a query or a space.
func couldBe(p, prefix []byte) bool {
	if len(p) <= len(prefix) {
		return bytes.HasPrefix(prefix, p)
	}
	return bytes.HasPrefix(p, prefix) && (p[len(prefix)] == '?' || p[len(prefix)] == ' ')
}

func (s *splitListener) handOff(c net.Conn, read []byte) {
	pc := &prefixConn{Conn: c, prefix: append([]byte(nil), read...)}
	select {
	case s.conns <- pc:
	case <-s.done:
		c.Close()
	}
}

// serveUpgrade serves a complete upgrade request head. It returns false,
// having written nothing, when the request is not an upgrade after all.
func (s *splitListener) serveUpgrade(c net.Conn, head, rest []byte) bool {
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), 256))
	if err != nil || !headerHasToken(req.Header, "Upgrade", "websocket") {
		return false
	}
	req.RemoteAddr = c.RemoteAddr().String()
	req.Body = http.NoBody
	w := &rawWriter{c: c, rest: append([]byte(nil), rest...), proto: req.Proto}
	func() {
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				s.log.Error("ws: upgrade handler panicked", "panic", fmt.Sprint(p))
			}
		}()
		s.h.ServeHTTP(w, req)
	}()
	if !w.hijacked {
		w.finish()
		c.Close() // one request per connection on this path
	}
	return true
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range bytes.Split([]byte(v), []byte(",")) {
			if bytes.EqualFold(bytes.Trim(t, " \t"), []byte(token)) { // HTTP's whitespace only
				return true
			}
		}
	}
	return false
}

// rawWriter answers one request straight on the connection: a refusal
// (status, headers, body, then close) or a hijack for the upgrade.
type rawWriter struct {
	c        net.Conn
	rest     []byte // bytes after the head: early frames of a fast client
	proto    string
	header   http.Header
	status   int
	out      []byte // response being built, written on finish
	hijacked bool
}

func (w *rawWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *rawWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *rawWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	if len(w.out)+len(p) > 64<<10 {
		return 0, errors.New("ws: response too large for the upgrade path")
	}
	w.out = append(w.out, p...)
	return len(p), nil
}

// finish writes the response, delimited by its length and the close.
func (w *rawWriter) finish() {
	w.WriteHeader(http.StatusOK)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	w.Header().Set("Content-Length", strconv.Itoa(len(w.out)))
	w.Header().Set("Connection", "close")
	_ = w.Header().Write(&b) // into a bytes.Buffer: cannot fail
	b.WriteString("\r\n")
	b.Write(w.out)
	w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = w.c.Write(b.Bytes()) // the connection is closed next; a client gone has nothing to read
}

// Hijack implements http.Hijacker: the reader holds the early bytes, the
// writer is small (a 101 response is a few hundred bytes).
func (w *rawWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	r := bufio.NewReaderSize(bytes.NewReader(w.rest), max(16, len(w.rest)))
	if len(w.rest) > 0 {
		_, _ = r.Peek(len(w.rest)) // cannot fail: the reader holds all of rest; buffered, as net/http's reader would have them
	}
	return w.c, bufio.NewReadWriter(r, bufio.NewWriterSize(w.c, 512)), nil
}

// prefixConn replays bytes already read before reading the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

var _ io.Reader = (*prefixConn)(nil)
