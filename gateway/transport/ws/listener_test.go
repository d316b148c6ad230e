package ws_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// splitFixture serves /socket/websocket (upgrades through the split
// listener) and everything else through net/http, recording which path
// served each request.
type splitFixture struct {
	addr string
	mu   sync.Mutex
	via  []string // "hijackable:<path>" per request the handler saw
}

func newSplitFixture(t *testing.T) *splitFixture {
	t.Helper()
	srv, err := fws.New(fws.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := &splitFixture{}
	mux := http.NewServeMux()
	mux.HandleFunc("/socket/websocket", func(w http.ResponseWriter, r *http.Request) {
		f.record(w, r)
		if r.URL.Query().Get("refuse") != "" {
			w.Header().Set("Retry-After", "7")
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session {
			return &echo{c: c, closed: make(chan transport.CloseCode, 1)}
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.record(w, r)
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, "plain "+r.Method+" "+r.URL.Path+" "+string(body))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(fws.SplitListener(ln, "/socket/websocket", mux, 500*time.Millisecond, nil))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		srv.Shutdown(ctx)
	})
	f.addr = ln.Addr().String()
	return f
}

// record notes whether the request came through net/http (whose writer is
// an *http.response) or the split path (our raw writer).
func (f *splitFixture) record(w http.ResponseWriter, r *http.Request) {
	kind := "split"
	if _, ok := w.(http.Flusher); ok {
		kind = "net/http" // its writer flushes; the split path's does not
	}
	f.mu.Lock()
	f.via = append(f.via, kind+":"+r.URL.Path)
	f.mu.Unlock()
}

func (f *splitFixture) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.via...)
}

func TestSplitListenerUpgradesWithoutNetHTTP(t *testing.T) {
	f := newSplitFixture(t)
	c, _, hs, err := ws.Dialer{Protocols: []string{"phoenix"}}.Dial(context.Background(), "ws://"+f.addr+"/socket/websocket?vsn=2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if hs.Protocol != "phoenix" {
		t.Fatalf("subprotocol %q", hs.Protocol)
	}
	if err := wsutil.WriteClientText(c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := wsutil.ReadServerText(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if s := f.seen(); len(s) != 1 || s[0] != "split:/socket/websocket" {
		t.Fatalf("served via %v", s)
	}
}

func TestSplitListenerKeepsEarlyFrames(t *testing.T) {
	f := newSplitFixture(t)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The head and a masked text frame in one write: the frame must not be
	// lost between the head reader and the epoll loop.
	head := "GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	frame := []byte{0x81, 0x82, 0, 0, 0, 0, 'h', 'i'}
	if _, err := c.Write(append([]byte(head), frame...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	got, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{br, c})
	if err != nil || string(got) != "hi" {
		t.Fatalf("early frame: %q %v", got, err)
	}
}

func TestSplitListenerRefusalIsHTTP(t *testing.T) {
	f := newSplitFixture(t)
	_, _, _, err := ws.Dial(context.Background(), "ws://"+f.addr+"/socket/websocket?refuse=1")
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != http.StatusServiceUnavailable {
		t.Fatalf("refused upgrade: %v", err)
	}
	// The raw response is complete: status, Retry-After, length, body.
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /socket/websocket?refuse=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || strings.TrimSpace(string(body)) != "overloaded" {
		t.Fatalf("refusal: %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

func TestSplitListenerHandsOtherRequestsToNetHTTP(t *testing.T) {
	f := newSplitFixture(t)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"POST", "/api/v1/publish", `{"topic":"a"}`},
		{"GET", "/socket/websocketx", ""}, // a longer path is not the endpoint
		{"GET", "/socket/websocket", ""},  // the endpoint without Upgrade
	} {
		req, _ := http.NewRequest(tc.method, "http://"+f.addr+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.path == "/socket/websocket" {
			continue // served by the upgrade handler's error path, via net/http
		}
		if want := "plain " + tc.method + " " + tc.path + " " + tc.body; string(body) != want {
			t.Fatalf("%s %s: %q, want %q", tc.method, tc.path, body, want)
		}
	}
	for _, s := range f.seen() {
		if !strings.HasPrefix(s, "net/http:") {
			t.Fatalf("non-upgrade request served outside net/http: %v", f.seen())
		}
	}
}

func TestSplitListenerDropsSlowHeads(t *testing.T) {
	f := newSplitFixture(t)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /socket/websocket HTTP/1.1\r\nHost: x\r\n") // and never the rest
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a never-finished head got %d bytes back instead of a close", n)
	}
	if len(f.seen()) != 0 {
		t.Fatalf("handler ran for an unfinished head: %v", f.seen())
	}
}
