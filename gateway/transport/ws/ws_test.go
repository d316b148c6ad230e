package ws_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// echo is a session that sends every message back and records closes.
type echo struct {
	c      transport.Conn
	closed chan transport.CloseCode
}

func (e *echo) HandleMessage(binary bool, data []byte) {
	b := append([]byte(nil), data...)
	if binary {
		e.c.Send(transport.NewBinary(b))
	} else {
		e.c.Send(transport.NewText(b))
	}
}
func (e *echo) HandleClose(code transport.CloseCode) { e.closed <- code }

type fixture struct {
	srv     *fws.Server
	url     string
	addr    string
	mu      sync.Mutex
	session []*echo
}

func newFixture(t *testing.T, cfg fws.Config) *fixture {
	t.Helper()
	srv, err := fws.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session {
			e := &echo{c: c, closed: make(chan transport.CloseCode, 1)}
			f.mu.Lock()
			f.session = append(f.session, e)
			f.mu.Unlock()
			return e
		})
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	})
	f.url = "ws" + strings.TrimPrefix(hs.URL, "http")
	f.addr = strings.TrimPrefix(hs.URL, "http://")
	return f
}

func (f *fixture) sessions() []*echo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*echo(nil), f.session...)
}

func (f *fixture) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.session)
}

func (f *fixture) dial(t *testing.T) net.Conn {
	t.Helper()
	c, _, _, err := ws.Dial(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeFrame writes a client frame with explicit control over every bit.
func writeFrame(t *testing.T, c net.Conn, fin bool, rsv byte, op ws.OpCode, masked bool, payload []byte) {
	t.Helper()
	if err := sendFrame(c, fin, rsv, op, masked, payload); err != nil {
		t.Fatal(err)
	}
}

// sendFrame is writeFrame for goroutines that may outlive the test (the
// server may close first, so errors are expected and ignored there).
func sendFrame(c net.Conn, fin bool, rsv byte, op ws.OpCode, masked bool, payload []byte) error {
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Length: int64(len(payload)), Masked: masked}
	p := append([]byte(nil), payload...)
	if masked {
		h.Mask = ws.NewMask()
		ws.Cipher(p, h.Mask, 0)
	}
	if err := ws.WriteHeader(c, h); err != nil {
		return err
	}
	_, err := c.Write(p)
	return err
}

type frame struct {
	op      ws.OpCode
	payload []byte
}

func readFrame(t *testing.T, c net.Conn) (frame, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(c)
	if err != nil {
		return frame{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c, p); err != nil {
		return frame{}, err
	}
	return frame{h.OpCode, p}, nil
}

// expectClose reads until a close frame and returns its code.
func expectClose(t *testing.T, c net.Conn) int {
	t.Helper()
	for {
		f, err := readFrame(t, c)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if f.op == ws.OpClose {
			if len(f.payload) < 2 {
				return 1005
			}
			return int(binary.BigEndian.Uint16(f.payload))
		}
	}
}

func TestEcho(t *testing.T) {
	f := newFixture(t, fws.Config{})
	c := f.dial(t)
	writeFrame(t, c, true, 0, ws.OpText, true, []byte(`["1","1","room:1","phx_join",{}]`))
	got, err := readFrame(t, c)
	if err != nil || got.op != ws.OpText || string(got.payload) != `["1","1","room:1","phx_join",{}]` {
		t.Fatalf("echo text: %v %v %q", err, got.op, got.payload)
	}
	writeFrame(t, c, true, 0, ws.OpBinary, true, []byte{0, 1, 2})
	got, _ = readFrame(t, c)
	if got.op != ws.OpBinary || string(got.payload) != "\x00\x01\x02" {
		t.Fatalf("echo binary: %v %q", got.op, got.payload)
	}
	// A fragmented message with a ping in the middle (allowed by RFC 6455).
	writeFrame(t, c, false, 0, ws.OpText, true, []byte("hel"))
	writeFrame(t, c, true, 0, ws.OpPing, true, []byte("p"))
	writeFrame(t, c, true, 0, ws.OpContinuation, true, []byte("lo"))
	got, _ = readFrame(t, c)
	if got.op != ws.OpPong || string(got.payload) != "p" {
		t.Fatalf("pong: %v %q", got.op, got.payload)
	}
	got, _ = readFrame(t, c)
	if got.op != ws.OpText || string(got.payload) != "hello" {
		t.Fatalf("fragmented: %v %q", got.op, got.payload)
	}
	// A large message split across many TCP writes.
	big := strings.Repeat("x", 60000)
	writeFrame(t, c, true, 0, ws.OpText, true, []byte(big))
	got, _ = readFrame(t, c)
	if string(got.payload) != big {
		t.Fatalf("big message: %d bytes", len(got.payload))
	}
	// Client close: echoed, session told the peer's code.
	writeFrame(t, c, true, 0, ws.OpClose, true, ws.NewCloseFrameBody(1000, "bye"))
	if code := expectClose(t, c); code != 1000 {
		t.Fatalf("close echo %d", code)
	}
	select {
	case code := <-f.sessions()[0].closed:
		if code != 1000 {
			t.Fatalf("HandleClose(%d)", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("HandleClose not called")
	}
}

func TestBadFramesCloseWithCode(t *testing.T) {
	f := newFixture(t, fws.Config{MaxMessageSize: 64 << 10})
	frag := func(t *testing.T, c net.Conn) {
		sendFrame(c, false, 0, ws.OpText, true, make([]byte, 100))
		for i := 0; i < 10000; i++ {
			h := ws.Header{Fin: i == 9999, OpCode: ws.OpContinuation, Length: 100, Masked: true}
			if err := ws.WriteHeader(c, h); err != nil {
				return // the server may already have closed
			}
			if _, err := c.Write(make([]byte, 100)); err != nil {
				return
			}
		}
	}
	cases := []struct {
		name string
		send func(t *testing.T, c net.Conn)
		code int
	}{
		{"invalid UTF-8", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, ws.OpText, true, []byte{0xff, 0xfe}) }, 1007},
		{"unmasked", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, ws.OpText, false, []byte("hi")) }, 1002},
		{"reserved opcode 3", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, 3, true, nil) }, 1002},
		{"reserved opcode 0xB", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, 0xB, true, nil) }, 1002},
		{"RSV1", func(t *testing.T, c net.Conn) { sendFrame(c, true, 4, ws.OpText, true, []byte("x")) }, 1002},
		{"ping 126 bytes", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, ws.OpPing, true, make([]byte, 126)) }, 1002},
		{"fragmented ping", func(t *testing.T, c net.Conn) { sendFrame(c, false, 0, ws.OpPing, true, []byte("x")) }, 1002},
		{"1-byte close", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, ws.OpClose, true, []byte{3}) }, 1002},
		{"close 1005", func(t *testing.T, c net.Conn) {
			sendFrame(c, true, 0, ws.OpClose, true, []byte{0x03, 0xED})
		}, 1002},
		{"close 999", func(t *testing.T, c net.Conn) { sendFrame(c, true, 0, ws.OpClose, true, []byte{0x03, 0xE7}) }, 1002},
		{"70000-byte frame", func(t *testing.T, c net.Conn) {
			h := ws.Header{Fin: true, OpCode: ws.OpText, Length: 70000, Masked: true}
			ws.WriteHeader(c, h) // header only: the cap is checked before buffering
		}, 1009},
		{"10000 fragments", frag, 1009},
		{"continuation without start", func(t *testing.T, c net.Conn) {
			sendFrame(c, true, 0, ws.OpContinuation, true, []byte("x"))
		}, 1002},
		{"interleaved data frames", func(t *testing.T, c net.Conn) {
			sendFrame(c, false, 0, ws.OpText, true, []byte("a"))
			sendFrame(c, true, 0, ws.OpText, true, []byte("b"))
		}, 1002},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t)
			go tc.send(t, c)
			if code := expectClose(t, c); code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
		})
	}
}

func TestHandshakeErrors(t *testing.T) {
	f := newFixture(t, fws.Config{})
	req := func(extra string) *http.Response {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n%s\r\n", extra)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// Missing key → 400; version 8 → 426 naming version 13.
	if r := req("Sec-WebSocket-Version: 13\r\n"); r.StatusCode != 400 {
		t.Fatalf("missing key: %d", r.StatusCode)
	}
	r := req("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n")
	if r.StatusCode != 426 || r.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Fatalf("version 8: %d %q", r.StatusCode, r.Header.Get("Sec-WebSocket-Version"))
	}
	// phoenix.js 1.8 offers "phoenix" plus a token entry; "phoenix" must be selected.
	r = req("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: phoenix,base64url.bearer.phx.dG9r\r\n")
	if r.StatusCode != 101 || r.Header.Get("Sec-WebSocket-Protocol") != "phoenix" {
		t.Fatalf("subprotocol: %d %q", r.StatusCode, r.Header.Get("Sec-WebSocket-Protocol"))
	}
}

func TestIdlePingThenTimeout(t *testing.T) {
	f := newFixture(t, fws.Config{IdleTimeout: 3 * time.Second, PingInterval: time.Second})
	c := f.dial(t)
	got, err := readFrame(t, c)
	if err != nil || got.op != ws.OpPing {
		t.Fatalf("want ping, got %v %v", got.op, err)
	}
	// Not answering: the server gives up with 4000.
	if code := expectClose(t, c); code != 4000 {
		t.Fatalf("idle close %d", code)
	}
}

func TestSlowConsumerIsCut(t *testing.T) {
	f := newFixture(t, fws.Config{MaxQueueBytes: 64 << 10, SendBuffer: 16 << 10})
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, _, err := d.Dial(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// The session is created after the 101 goes out: wait for slow's
	// before dialling fast, so sessions[0] is slow's.
	for deadline := time.Now().Add(10 * time.Second); f.count() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	fast := f.dial(t)
	deadline := time.Now().Add(10 * time.Second)
	for f.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	sessions := append([]*echo(nil), f.session...)
	f.mu.Unlock()
	msg := transport.NewText([]byte(strings.Repeat("m", 1000)))
	var fastGot atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for fastGot.Load() < 5000 {
			fr, err := readFrame(t, fast)
			if err != nil {
				return
			}
			if fr.op == ws.OpText {
				fastGot.Add(1)
			}
		}
	}()
	cut := false
	for i := 0; i < 5000; i++ {
		if !sessions[0].c.Send(msg) {
			cut = true
		}
		if !sessions[1].c.Send(msg) {
			t.Fatal("fast reader refused")
		}
		// Pace by the fast reader (a loaded machine may deschedule it),
		// so only the reader that really stopped reading falls behind.
		for deadline := time.Now().Add(10 * time.Second); int64(i)-fastGot.Load() > 20 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
	}
	<-done
	if !cut {
		t.Fatal("slow reader never cut")
	}
	if n := fastGot.Load(); n != 5000 {
		t.Fatalf("fast reader got %d of 5000", n)
	}
	select {
	case code := <-sessions[0].closed:
		if code != transport.CloseSlowConsumer {
			t.Fatalf("slow close code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow consumer not closed")
	}
	if n := f.srv.Stats().Closes[transport.CloseSlowConsumer]; n != 1 {
		t.Fatalf("slow-consumer closes %d", n)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	srv, err := fws.New(fws.Config{})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan transport.CloseCode, 10)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session {
			return &echo{c: c, closed: closed}
		})
	}))
	defer hs.Close()
	c, _, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		// Answer the server's close like a browser would.
		for {
			f, err := readFrame(t, c)
			if err != nil {
				return
			}
			if f.op == ws.OpClose {
				closed <- transport.CloseCode(binary.BigEndian.Uint16(f.payload))
				sendFrame(c, true, 0, ws.OpClose, true, f.payload[:2])
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if code := <-closed; code != transport.CloseGoingAway {
			t.Fatalf("close code %d", code)
		}
	}
	if srv.Len() != 0 {
		t.Fatalf("%d connections left", srv.Len())
	}
	// New upgrades are refused with 503.
	_, _, _, err = ws.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != 503 {
		t.Fatalf("upgrade after shutdown: %v", err)
	}
}

// The point of the epoll design: an idle connection holds no goroutine.
// 1,000 upgraded, idle connections must not add goroutines in proportion.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	f := newFixture(t, fws.Config{})
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 1000
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _, _, err := ws.Dial(context.Background(), f.url)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.Len() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.srv.Len() != n {
		t.Fatalf("%d connections open, want %d", f.srv.Len(), n)
	}
	// net/http's per-request goroutines end once the handler returns.
	var after int
	for time.Now().Before(deadline) {
		if after = runtime.NumGoroutine(); after-before < 50 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after-before >= 50 {
		t.Fatalf("%d idle connections added %d goroutines", n, after-before)
	}
	// And they still work: one echo through a random connection.
	c := conns[n/2]
	writeFrame(t, c, true, 0, ws.OpText, true, []byte("still alive"))
	if got, err := readFrame(t, c); err != nil || string(got.payload) != "still alive" {
		t.Fatalf("echo: %v %q", err, got.payload)
	}
}

// A credential's expiry closes the connection on the wheel, at second
// granularity (JWT exp is in seconds too), with 4001 for an
// expired token), with no timer per connection.
func TestExpireAt(t *testing.T) {
	srv, err := fws.New(fws.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session {
			c.(transport.Expirer).ExpireAt(time.Now().Add(2500*time.Millisecond), transport.CloseTokenExpired, "token expired")
			return &echo{c: c, closed: make(chan transport.CloseCode, 1)}
		})
	}))
	defer hs.Close()
	defer srv.Shutdown(context.Background())
	c, _, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for {
		f, err := readFrame(t, c)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if f.op != ws.OpClose {
			continue
		}
		// The server keeps the reason per code, not per connection:
		// it still says why.
		if len(f.payload) < 2 || binary.BigEndian.Uint16(f.payload) != 4001 || string(f.payload[2:]) != "token expired" {
			t.Fatalf("close frame %q, want 4001 \"token expired\"", f.payload)
		}
		break
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("closed after %v, before the expiry", el)
	}
}

// Drain closes connections in batches over the window with the given code,
// not all at once.
func TestDrainIsPaced(t *testing.T) {
	f := newFixture(t, fws.Config{})
	const n = 40
	var conns []net.Conn
	for i := 0; i < n; i++ {
		conns = append(conns, f.dial(t))
	}
	for deadline := time.Now().Add(10 * time.Second); f.srv.Len() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.srv.Drain(context.Background(), time.Second, transport.CloseServiceRestart)
	}()
	<-done
	// Every client got 1012, and the last batch went out well after the
	// first: the drain took (about) its window.
	for _, c := range conns {
		if code := expectClose(t, c); code != 1012 {
			t.Fatalf("close code %d", code)
		}
	}
	// New upgrades are refused while draining.
	_, _, _, err := ws.Dial(context.Background(), f.url)
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != 503 {
		t.Fatalf("upgrade while draining: %v", err)
	}
}

func TestRemoteAddrFromKernel(t *testing.T) {
	f := newFixture(t, fws.Config{})
	c := f.dial(t)
	deadline := time.Now().Add(5 * time.Second)
	for f.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f.count() != 1 {
		t.Fatal("no session")
	}
	if got, want := f.sessions()[0].c.RemoteAddr(), c.LocalAddr().String(); got != want {
		t.Fatalf("RemoteAddr() = %q, want the client's address %q", got, want)
	}
}
