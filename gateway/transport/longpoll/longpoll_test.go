package longpoll

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
)

const wait = 5 * time.Second

// rec is one HandleMessage call.
type rec struct {
	binary bool
	data   string
}

// fakeSess is a transport.Session that records what it gets and, by default,
// echoes every text frame back.
type fakeSess struct {
	conn  transport.Conn
	onMsg func(f *fakeSess, binary bool, data []byte)

	inMsg      atomic.Int32
	concurrent atomic.Bool

	mu     sync.Mutex
	msgs   []rec
	closes []transport.CloseCode
	closed chan struct{}
}

func (f *fakeSess) HandleMessage(binary bool, data []byte) {
	if f.inMsg.Add(1) > 1 {
		f.concurrent.Store(true)
	}
	defer f.inMsg.Add(-1)
	f.mu.Lock()
	if len(f.closes) > 0 {
		f.concurrent.Store(true) // a message after HandleClose
	}
	f.msgs = append(f.msgs, rec{binary, string(data)})
	f.mu.Unlock()
	if f.onMsg != nil {
		f.onMsg(f, binary, data)
	} else if !binary {
		f.conn.Send(transport.NewText(bytes.Clone(data)))
	}
}

func (f *fakeSess) HandleClose(code transport.CloseCode) {
	if f.inMsg.Load() > 0 {
		f.concurrent.Store(true)
	}
	f.mu.Lock()
	f.closes = append(f.closes, code)
	n := len(f.closes)
	f.mu.Unlock()
	if n == 1 {
		close(f.closed)
	}
}

func (f *fakeSess) records() []rec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rec(nil), f.msgs...)
}

func (f *fakeSess) closeCodes() []transport.CloseCode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]transport.CloseCode(nil), f.closes...)
}

// waitClosed waits for HandleClose and checks it came once with code.
func (f *fakeSess) waitClosed(t *testing.T, code transport.CloseCode) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(wait):
		t.Fatalf("HandleClose not called")
	}
	time.Sleep(20 * time.Millisecond) // a second call would show up here
	if got := f.closeCodes(); len(got) != 1 || got[0] != code {
		t.Fatalf("HandleClose calls = %v, want exactly [%d]", got, code)
	}
	if f.concurrent.Load() {
		t.Fatalf("HandleMessage ran concurrently with itself or with/after HandleClose")
	}
}

type harness struct {
	t   *testing.T
	lp  *Server
	srv *httptest.Server
	url string // …/socket/longpoll

	mu          sync.Mutex
	sessions    []*fakeSess
	acceptURLs  []*url.URL
	refuse      error
	onMsg       func(f *fakeSess, binary bool, data []byte)
	acceptCalls atomic.Int32
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, lp: New(cfg)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.lp.Serve(w, r, h.accept)
	}))
	h.url = h.srv.URL + "/socket/longpoll"
	t.Cleanup(func() {
		h.srv.CloseClientConnections()
		h.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		h.lp.Shutdown(ctx)
	})
	return h
}

func (h *harness) accept(r *http.Request) (func(transport.Conn) transport.Session, error) {
	h.acceptCalls.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	u := *r.URL
	h.acceptURLs = append(h.acceptURLs, &u)
	if h.refuse != nil {
		return nil, h.refuse
	}
	onMsg := h.onMsg
	return func(c transport.Conn) transport.Session {
		f := &fakeSess{conn: c, onMsg: onMsg, closed: make(chan struct{})}
		h.mu.Lock()
		h.sessions = append(h.sessions, f)
		h.mu.Unlock()
		return f
	}, nil
}

func (h *harness) session(i int) *fakeSess {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[i]
}

func (h *harness) lastAcceptURL() *url.URL {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acceptURLs[len(h.acceptURLs)-1]
}

// pollResp is a decoded answer. Token is nil when the field is absent.
type pollResp struct {
	HTTP     int
	Status   int      `json:"status"`
	Token    *string  `json:"token"`
	Messages []string `json:"messages"`
	raw      string
}

func (p pollResp) token() string {
	if p.Token == nil {
		return "<none>"
	}
	return *p.Token
}

func do(t *testing.T, method, u string, header http.Header, body string) pollResp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	p := pollResp{HTTP: res.StatusCode, raw: string(b)}
	if len(b) > 0 && res.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, u, b, err)
		}
	}
	p.HTTP = res.StatusCode
	return p
}

func (h *harness) get(query string) pollResp {
	h.t.Helper()
	return do(h.t, http.MethodGet, h.url+"?"+query, nil, "")
}

func (h *harness) post(query, body string) pollResp {
	h.t.Helper()
	return do(h.t, http.MethodPost, h.url+"?"+query, http.Header{"Content-Type": {"application/x-ndjson"}}, body)
}

// open runs the handshake and returns the session token.
func (h *harness) open() string {
	h.t.Helper()
	p := h.get("vsn=2.0.0&")
	if p.HTTP != 200 || p.Status != 410 || p.Token == nil || !strings.HasPrefix(*p.Token, tokenPrefix) || p.Messages == nil || len(p.Messages) != 0 {
		h.t.Fatalf("handshake = %+v (%s), want 410 with a token and []", p, p.raw)
	}
	return *p.Token
}

func tq(tok string) string { return "vsn=2.0.0&token=" + url.QueryEscape(tok) }

func fast() Config {
	return Config{PollWindow: 150 * time.Millisecond, IdleTimeout: 2 * time.Second}
}

func TestHandshakePostPoll(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	if h.lp.Len() != 1 {
		t.Fatalf("Len = %d, want 1", h.lp.Len())
	}
	frame := `["1","1","room:1","phx_join",{"s":"é \"q\" \\ <>&\u0001"}]`
	if p := h.post(tq(tok), frame); p.HTTP != 200 || p.Status != 200 {
		t.Fatalf("POST = %+v (%s)", p, p.raw)
	}
	p := h.get(tq(tok))
	if p.Status != 200 || p.token() != tok || len(p.Messages) != 1 || p.Messages[0] != frame {
		t.Fatalf("poll = %+v (%s), want the echoed frame as a JSON string", p, p.raw)
	}
	// The echo is a JSON string holding the v2 frame, as JSON.parse expects.
	var arr []any
	if err := json.Unmarshal([]byte(p.Messages[0]), &arr); err != nil || len(arr) != 5 {
		t.Fatalf("message is not a v2 frame: %q (%v)", p.Messages[0], err)
	}
	// Nothing more: 204 after the window, token still present.
	start := time.Now()
	p = h.get(tq(tok))
	if p.Status != 204 || p.token() != tok || p.Messages == nil || len(p.Messages) != 0 {
		t.Fatalf("empty poll = %+v (%s), want 204", p, p.raw)
	}
	if d := time.Since(start); d < 120*time.Millisecond {
		t.Fatalf("204 after %v, want about the poll window", d)
	}
}

func TestPollWakesOnSend(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 3 * time.Second})
	tok := h.open()
	got := make(chan pollResp, 1)
	go func() { got <- do(t, "GET", h.url+"?"+tq(tok), nil, "") }()
	waitHeld(t, h.lp, tok)
	start := time.Now()
	h.session(0).conn.Send(transport.NewText([]byte(`[null,"7","room:1","shout",{}]`)))
	p := <-got
	if p.Status != 200 || len(p.Messages) != 1 || time.Since(start) > time.Second {
		t.Fatalf("poll = %+v after %v", p, time.Since(start))
	}
}

// waitHeld waits until a GET of the session tok is held.
func waitHeld(t *testing.T, s *Server, tok string) *waiter {
	t.Helper()
	id, ok := verifyToken(s.cfg.Secret, tok)
	if !ok {
		t.Fatalf("bad token %q", tok)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if c := s.lookup(id); c != nil {
			c.mu.Lock()
			w := c.waiter
			c.mu.Unlock()
			if w != nil {
				return w
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no GET held")
	return nil
}

func TestPostLinesInOrder(t *testing.T) {
	h := newHarness(t, fast())
	h.onMsg = func(*fakeSess, bool, []byte) {}
	tok := h.open()
	bin := []byte{0, 2, 1, 6, 3, '5', '1', '0', 'r', 'o', 'o', 'm', ':', '1', 'b', 'i', 'n', 7, 7, 7}
	body := `["1","2","room:1","a",{}]` + "\r\n" + base64.StdEncoding.EncodeToString(bin) + "\n" + `["1","3","room:1","c",{}]`
	if p := h.post(tq(tok), body); p.Status != 200 {
		t.Fatalf("POST = %+v", p)
	}
	want := []rec{{false, `["1","2","room:1","a",{}]`}, {true, string(bin)}, {false, `["1","3","room:1","c",{}]`}}
	got := h.session(0).records()
	if len(got) != len(want) {
		t.Fatalf("HandleMessage calls = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("call %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestPostBadLine(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	p := h.post(tq(tok), `["1","2","room:1","a",{}]`+"\n"+"not base64!")
	if p.HTTP != 400 || p.Status != 400 {
		t.Fatalf("POST = %+v, want 400", p)
	}
	if n := len(h.session(0).records()); n != 0 {
		t.Fatalf("%d lines dispatched, want none", n)
	}
	if h.lp.Len() != 1 {
		t.Fatalf("session ended on a bad line")
	}
}

func TestOversizedPost(t *testing.T) {
	cfg := fast()
	cfg.MaxPostBytes = 100
	cfg.MaxLines = 2
	h := newHarness(t, cfg)
	tok := h.open()
	p := h.post(tq(tok), `["1","2","room:1","a",{"x":"`+strings.Repeat("x", 200)+`"}]`)
	if p.HTTP != 413 || p.Status != 413 {
		t.Fatalf("big POST = %+v", p)
	}
	h.session(0).waitClosed(t, transport.CloseMessageTooBig)
	if p := h.get(tq(tok)); p.Status != 410 {
		t.Fatalf("poll after 413 = %+v, want 410", p)
	}

	tok = h.open()
	p = h.post(tq(tok), "[1]\n[2]\n[3]")
	if p.HTTP != 413 || p.Status != 413 {
		t.Fatalf("3-line POST with MaxLines 2 = %+v", p)
	}
	if n := len(h.session(1).records()); n != 0 {
		t.Fatalf("%d lines dispatched, want none", n)
	}
	h.session(1).waitClosed(t, transport.CloseMessageTooBig)
}

func TestTamperedToken(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	bad := tok[:len(tok)-2] + "AA"
	if bad == tok {
		bad = tok[:len(tok)-2] + "BB"
	}
	// A GET with the tampered token takes the new-session path.
	p := h.get("token=USER&vsn=2.0.0&token=" + url.QueryEscape(bad))
	if p.Status != 410 || p.Token == nil || *p.Token == "" || *p.Token == tok || *p.Token == bad {
		t.Fatalf("tampered GET = %+v, want 410 with a new token", p)
	}
	if h.acceptCalls.Load() != 2 {
		t.Fatalf("accept calls = %d, want 2", h.acceptCalls.Load())
	}
	// accept sees the user's params only.
	q := h.lastAcceptURL().Query()
	if got := q["token"]; len(got) != 1 || got[0] != "USER" {
		t.Fatalf("accept saw token params %q, want [USER]", got)
	}
	// A POST with it is refused as an unknown session.
	if p := h.post("token="+url.QueryEscape(bad), "[1]"); p.Status != 410 {
		t.Fatalf("tampered POST = %+v, want 410", p)
	}
	// Another key's token: not ours either.
	other := signToken([]byte("another gateway"), newSessionID())
	if p := h.get(tq(other)); p.Status != 410 || p.token() == "" || h.acceptCalls.Load() != 3 {
		t.Fatalf("foreign GET = %+v (accept calls %d), want a new session", p, h.acceptCalls.Load())
	}
}

func TestEndedSessionToken(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	h.session(0).conn.Close(transport.CloseForbidden, "bye")
	h.session(0).waitClosed(t, transport.CloseForbidden)
	p := h.get(tq(tok))
	if p.HTTP != 200 || p.Status != 410 || p.Token == nil || *p.Token != "" || p.Messages == nil {
		t.Fatalf("GET of an ended session = %+v (%s), want {status:410,token:\"\",messages:[]}", p, p.raw)
	}
	if h.acceptCalls.Load() != 1 {
		t.Fatalf("accept called for a session-gone 410")
	}
	if h.lp.Len() != 0 {
		t.Fatalf("Len = %d", h.lp.Len())
	}
	if p := h.post(tq(tok), "[1]"); p.Status != 410 {
		t.Fatalf("POST of an ended session = %+v, want 410", p)
	}
	// A validly signed token whose session never existed here (restart).
	if p := h.get(tq(signToken(h.lp.cfg.Secret, newSessionID()))); p.Status != 410 || p.token() != "" {
		t.Fatalf("unknown session = %+v", p)
	}
}

func TestCloseDrainsBuffered(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	c := h.session(0).conn
	c.Send(transport.NewText([]byte(`[null,null,"room:1","a",{}]`)))
	c.Close(transport.CloseTokenExpired, "expired")
	if c.Send(transport.NewText([]byte("[]"))) {
		t.Fatalf("Send after Close returned true")
	}
	h.session(0).waitClosed(t, transport.CloseTokenExpired)
	if p := h.get(tq(tok)); p.Status != 200 || len(p.Messages) != 1 {
		t.Fatalf("first GET after Close = %+v, want the buffered frame", p)
	}
	if p := h.get(tq(tok)); p.Status != 410 {
		t.Fatalf("second GET after Close = %+v, want 410", p)
	}
}

func TestCloseWakesHeldGet(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 3 * time.Second})
	tok := h.open()
	got := make(chan pollResp, 1)
	go func() { got <- do(t, "GET", h.url+"?"+tq(tok), nil, "") }()
	waitHeld(t, h.lp, tok)
	h.session(0).conn.Close(transport.ClosePolicyViolation, "")
	select {
	case p := <-got:
		if p.Status != 410 {
			t.Fatalf("held GET = %+v, want 410", p)
		}
	case <-time.After(time.Second):
		t.Fatalf("held GET not answered on Close")
	}
}

func TestIdleExpiry(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 300 * time.Millisecond, IdleTimeout: 100 * time.Millisecond})
	tok := h.open()
	// A held GET is not idle, even when held for longer than IdleTimeout.
	if p := h.get(tq(tok)); p.Status != 204 {
		t.Fatalf("poll = %+v, want 204", p)
	}
	if h.lp.Len() != 1 {
		t.Fatalf("session expired while polled")
	}
	h.session(0).waitClosed(t, transport.CloseHeartbeatTimeout)
	if h.lp.Len() != 0 {
		t.Fatalf("Len = %d after expiry", h.lp.Len())
	}
	if p := h.get(tq(tok)); p.Status != 410 || p.token() != "" {
		t.Fatalf("poll after expiry = %+v, want 410", p)
	}
	if st := h.lp.Stats(); st.IdleExpired != 1 || st.Closes[transport.CloseHeartbeatTimeout] != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestOverflow(t *testing.T) {
	cfg := fast()
	cfg.MaxBuffered, cfg.MaxBufferedUnpolled = 100, 100
	h := newHarness(t, cfg)
	tok := h.open()
	c := h.session(0).conn
	if !c.Send(transport.NewText(bytes.Repeat([]byte("a"), 60))) {
		t.Fatalf("first Send refused")
	}
	if c.Backlog() != 60 {
		t.Fatalf("Backlog = %d", c.Backlog())
	}
	if c.Send(transport.NewText(bytes.Repeat([]byte("b"), 60))) {
		t.Fatalf("Send over MaxBuffered returned true")
	}
	h.session(0).waitClosed(t, transport.CloseSlowConsumer)
	if c.Backlog() != 0 {
		t.Fatalf("Backlog after overflow = %d", c.Backlog())
	}
	if p := h.get(tq(tok)); p.Status != 410 {
		t.Fatalf("poll after overflow = %+v, want 410", p)
	}
}

// A session nobody ever polled holds less, for less long: phoenix.js
// polls at once, so such sessions only serve to hold the server's memory.
func TestUnpolledSessionBudget(t *testing.T) {
	cfg := fast()
	cfg.MaxBuffered, cfg.FirstPollTimeout = 400, 100*time.Millisecond
	h := newHarness(t, cfg)
	h.open()
	c := h.session(0).conn
	if !c.Send(transport.NewText(bytes.Repeat([]byte("a"), 60))) {
		t.Fatal("first Send refused")
	}
	// 60 + 60 > 400/4: over the unpolled budget, not over MaxBuffered.
	if c.Send(transport.NewText(bytes.Repeat([]byte("b"), 60))) {
		t.Fatal("Send over MaxBufferedUnpolled returned true")
	}
	h.session(0).waitClosed(t, transport.CloseSlowConsumer)

	// Polled once, the session gets the whole MaxBuffered.
	tok := h.open()
	h.get(tq(tok))
	c = h.session(1).conn
	for i := range 6 {
		if !c.Send(transport.NewText(bytes.Repeat([]byte("c"), 60))) {
			t.Fatalf("Send %d of a polled session refused", i)
		}
	}
	// Never polled: ended after FirstPollTimeout (100 ms), long before
	// IdleTimeout (2 s).
	h.open()
	start := time.Now()
	h.session(2).waitClosed(t, transport.CloseHeartbeatTimeout)
	if d := time.Since(start); d >= cfg.IdleTimeout {
		t.Fatalf("unpolled session lived %v, as long as the idle timeout", d)
	}
}

func TestBinaryNeverSent(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	c := h.session(0).conn
	c.Send(transport.NewBinary([]byte{2, 1, 1, 'a', 'b', 'c'}))
	c.Send(transport.NewText([]byte(`[null,null,"t","e",{}]`)))
	p := h.get(tq(tok))
	if p.Status != 200 || len(p.Messages) != 1 || p.Messages[0] != `[null,null,"t","e",{}]` {
		t.Fatalf("poll = %+v", p)
	}
	if n := h.lp.Stats().DroppedBinary; n != 1 {
		t.Fatalf("DroppedBinary = %d", n)
	}
}

func TestTwoTokenParams(t *testing.T) {
	h := newHarness(t, fast())
	// First GET: the only token is the user's; trailing '&' and '&&'.
	p := h.get("token=USER%201&&vsn=2.0.0&")
	if p.Status != 410 || p.token() == "" {
		t.Fatalf("handshake = %+v", p)
	}
	tok := *p.Token
	if got := h.lastAcceptURL().Query()["token"]; len(got) != 1 || got[0] != "USER 1" {
		t.Fatalf("accept saw %q", got)
	}
	q := "token=USER%201&vsn=2.0.0&token=" + url.QueryEscape(tok)
	if p := h.post(q, `["1","1","room:1","phx_join",{}]`); p.Status != 200 {
		t.Fatalf("POST = %+v", p)
	}
	if p := h.get(q); p.Status != 200 || len(p.Messages) != 1 || p.token() != tok {
		t.Fatalf("poll with two tokens = %+v", p)
	}
	if h.acceptCalls.Load() != 1 {
		t.Fatalf("accept calls = %d", h.acceptCalls.Load())
	}
	// The session token first and the user's last: the user's wins (Phoenix
	// takes the last), so this is a new session.
	if p := h.get("token=" + url.QueryEscape(tok) + "&token=USER&"); p.Status != 410 || p.token() == tok {
		t.Fatalf("reversed tokens = %+v", p)
	}
}

func TestAcceptRefused(t *testing.T) {
	h := newHarness(t, fast())
	h.refuse = errors.New("bad token")
	p := h.get("token=nope&vsn=2.0.0&")
	if p.HTTP != 200 || p.Status != 403 || p.Token != nil {
		t.Fatalf("refused = %+v (%s)", p, p.raw)
	}
	if h.lp.Len() != 0 {
		t.Fatalf("Len = %d", h.lp.Len())
	}
}

func TestMaxSessions(t *testing.T) {
	cfg := fast()
	cfg.MaxSessions = 1
	h := newHarness(t, cfg)
	h.open()
	p := h.get("vsn=2.0.0&")
	if p.Status != 500 || p.HTTP != 503 {
		t.Fatalf("over MaxSessions = %+v", p)
	}
}

func TestOrigin(t *testing.T) {
	cfg := fast()
	cfg.AllowOrigin = func(_ *http.Request, o string) bool { return o == "https://good.example" }
	h := newHarness(t, cfg)
	tok := h.open() // no Origin header (not a browser): allowed
	bad := http.Header{"Origin": {"https://evil.example"}, "Content-Type": {"application/x-ndjson"}}
	p := do(t, "POST", h.url+"?"+tq(tok), bad, `["1","1","room:1","phx_join",{}]`)
	if p.HTTP != 403 || p.Status != 403 {
		t.Fatalf("POST from a refused origin = %+v", p)
	}
	if n := len(h.session(0).records()); n != 0 {
		t.Fatalf("refused POST dispatched %d lines", n)
	}
	good := http.Header{"Origin": {"https://good.example"}, "Content-Type": {"application/x-ndjson"}}
	if p := do(t, "POST", h.url+"?"+tq(tok), good, `["1","1","room:1","phx_join",{}]`); p.Status != 200 {
		t.Fatalf("POST from an allowed origin = %+v", p)
	}

	// Preflight.
	req, _ := http.NewRequest(http.MethodOptions, h.url+"?"+tq(tok), nil)
	req.Header.Set("Origin", "https://good.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type, x-phoenix-authtoken")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 ||
		res.Header.Get("Access-Control-Allow-Origin") != "https://good.example" ||
		res.Header.Get("Access-Control-Allow-Headers") != "content-type, x-phoenix-authtoken" ||
		res.Header.Get("Access-Control-Allow-Methods") != "get, post, options" ||
		res.Header.Get("Access-Control-Max-Age") != "3600" {
		t.Fatalf("preflight = %d %v", res.StatusCode, res.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("refused preflight = %d %v", res.StatusCode, res.Header)
	}
}

func TestSecondGetReplacesFirst(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 3 * time.Second})
	tok := h.open()
	first := make(chan pollResp, 1)
	go func() { first <- do(t, "GET", h.url+"?"+tq(tok), nil, "") }()
	w1 := waitHeld(t, h.lp, tok)
	second := make(chan pollResp, 1)
	go func() { second <- do(t, "GET", h.url+"?"+tq(tok), nil, "") }()
	select {
	case p := <-first:
		if p.Status != 204 || p.token() != tok {
			t.Fatalf("replaced GET = %+v, want 204", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("first GET not ended by the second")
	}
	if w2 := waitHeld(t, h.lp, tok); w2 == w1 {
		t.Fatalf("same waiter")
	}
	h.session(0).conn.Send(transport.NewText([]byte(`[null,null,"t","e",{}]`)))
	if p := <-second; p.Status != 200 || len(p.Messages) != 1 {
		t.Fatalf("second GET = %+v", p)
	}
}

func TestCancelledGetKeepsFrames(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 3 * time.Second})
	tok := h.open()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", h.url+"?"+tq(tok), nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	waitHeld(t, h.lp, tok)
	cancel()
	<-done
	// Wait until the server noticed.
	id, _ := verifyToken(h.lp.cfg.Secret, tok)
	deadline := time.Now().Add(wait)
	for {
		c := h.lp.lookup(id)
		c.mu.Lock()
		held := c.waiter != nil
		c.mu.Unlock()
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cancelled GET still held")
		}
		time.Sleep(2 * time.Millisecond)
	}
	h.session(0).conn.Send(transport.NewText([]byte(`[null,null,"t","e",{}]`)))
	if p := h.get(tq(tok)); p.Status != 200 || len(p.Messages) != 1 {
		t.Fatalf("poll = %+v", p)
	}
}

func TestCloseDuringPost(t *testing.T) {
	h := newHarness(t, fast())
	h.onMsg = func(f *fakeSess, binary bool, data []byte) {
		if strings.Contains(string(data), "kick") {
			f.conn.Close(transport.ClosePolicyViolation, "kicked")
			time.Sleep(20 * time.Millisecond) // HandleClose must not run meanwhile
		}
	}
	tok := h.open()
	p := h.post(tq(tok), "[\"a\"]\n[\"kick\"]\n[\"c\"]")
	if p.Status != 410 {
		t.Fatalf("POST = %+v, want 410 (session ended during dispatch)", p)
	}
	f := h.session(0)
	f.waitClosed(t, transport.ClosePolicyViolation)
	if got := f.records(); len(got) != 2 {
		t.Fatalf("dispatched %+v, want the 2 lines up to the close", got)
	}
}

func TestConcurrentPostsSerialized(t *testing.T) {
	h := newHarness(t, fast())
	h.onMsg = func(*fakeSess, bool, []byte) { time.Sleep(time.Millisecond) }
	tok := h.open()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(t, "POST", h.url+"?"+tq(tok), http.Header{"Content-Type": {"application/x-ndjson"}}, "[1]\n[2]\n[3]")
		}()
	}
	wg.Wait()
	f := h.session(0)
	if n := len(f.records()); n != 24 {
		t.Fatalf("dispatched %d, want 24", n)
	}
	f.conn.Close(transport.CloseNormal, "")
	f.waitClosed(t, transport.CloseNormal)
}

func TestShutdown(t *testing.T) {
	h := newHarness(t, Config{PollWindow: 3 * time.Second})
	tok := h.open()
	tok2 := h.open()
	held := make(chan pollResp, 1)
	go func() { held <- do(t, "GET", h.url+"?"+tq(tok), nil, "") }()
	waitHeld(t, h.lp, tok)
	h.session(1).conn.Send(transport.NewText([]byte("[]")))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.lp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	h.session(0).waitClosed(t, transport.CloseGoingAway)
	h.session(1).waitClosed(t, transport.CloseGoingAway)
	if p := <-held; p.Status != 410 {
		t.Fatalf("held GET at shutdown = %+v, want 410", p)
	}
	if p := h.get(tq(tok2)); p.Status != 410 {
		t.Fatalf("poll after shutdown = %+v, want 410 (buffer dropped)", p)
	}
	if p := h.get("vsn=2.0.0&"); p.Status != 500 || p.HTTP != 503 {
		t.Fatalf("new session after shutdown = %+v", p)
	}
	if h.lp.Len() != 0 {
		t.Fatalf("Len = %d", h.lp.Len())
	}
}

func TestNonNdjsonIsOneMessage(t *testing.T) {
	h := newHarness(t, fast())
	h.onMsg = func(*fakeSess, bool, []byte) {}
	tok := h.open()
	p := do(t, "POST", h.url+"?"+tq(tok), http.Header{"Content-Type": {"application/json"}}, "[1,\n2]")
	if p.Status != 200 {
		t.Fatalf("POST = %+v", p)
	}
	if got := h.session(0).records(); len(got) != 1 || got[0].data != "[1,\n2]" {
		t.Fatalf("dispatched %+v", got)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHarness(t, fast())
	if p := do(t, http.MethodPut, h.url, nil, ""); p.HTTP != 405 {
		t.Fatalf("PUT = %d", p.HTTP)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `"\`, "\n\r\t\x00\x1f\x7f", "é€😀", "<>&", "bad\xffutf8\xc3", "\u2028\u2029"} {
		b := appendJSONString(nil, []byte(s))
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q → %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if s == "bad\xffutf8\xc3" {
			want = "bad\uFFFDutf8\uFFFD"
		}
		if got != want {
			t.Fatalf("%q → %s → %q, want %q", s, b, got, want)
		}
	}
}

func TestLastToken(t *testing.T) {
	for _, c := range []struct {
		q     string
		val   string
		idx   int
		found bool
	}{
		{"", "", 0, false},
		{"vsn=2.0.0&", "", 0, false},
		{"token=a&vsn=2.0.0&token=b", "b", 2, true},
		{"token=a&&vsn=2.0.0&", "a", 0, true},
		{"token=a%20b&token", "", 1, true},
		{"to%6Ben=x", "x", 0, true},
	} {
		v, i, f := lastToken(c.q)
		if v != c.val || i != c.idx || f != c.found {
			t.Errorf("lastToken(%q) = %q %d %v, want %q %d %v", c.q, v, i, f, c.val, c.idx, c.found)
		}
	}
	if got := withoutComponent("token=a&vsn=2.0.0&token=b", 2); got != "token=a&vsn=2.0.0" {
		t.Errorf("withoutComponent = %q", got)
	}
}

// The session may use the transport's expiry timer (credential expiry).
var _ transport.Expirer = (*lpSession)(nil)

func TestExpireAt(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	e := h.session(0).conn.(transport.Expirer)
	e.ExpireAt(time.Now().Add(time.Hour), transport.CloseNormal, "")
	e.ExpireAt(time.Now().Add(50*time.Millisecond), transport.CloseTokenExpired, "token expired")
	h.session(0).waitClosed(t, transport.CloseTokenExpired)
	if p := h.get(tq(tok)); p.Status != 410 {
		t.Fatalf("poll after expiry = %+v", p)
	}
}

// Recheck sees every poll and POST of a session with the session token
// taken out of the query (the user's own token param is left), and a
// refusal is a 403 that leaves the session alone.
func TestRecheck(t *testing.T) {
	cfg := fast()
	var seen atomic.Value
	cfg.Recheck = func(r *http.Request, sess transport.Session) bool {
		seen.Store(r.URL.RawQuery)
		return r.URL.Query().Get("token") == "mine" && sess != nil
	}
	h := newHarness(t, cfg)
	tok := h.open()
	q := "vsn=2.0.0&token=mine&token=" + url.QueryEscape(tok)
	h.session(0).conn.Send(transport.NewText([]byte(`[null,null,"t","e",{}]`)))
	if p := h.get(q); p.Status != 200 || len(p.Messages) != 1 {
		t.Fatalf("poll with the right credentials = %+v", p)
	}
	if got := seen.Load(); got != "vsn=2.0.0&token=mine" {
		t.Fatalf("Recheck saw query %q, want the session token removed", got)
	}
	other := "vsn=2.0.0&token=theirs&token=" + url.QueryEscape(tok)
	if p := h.get(other); p.HTTP != http.StatusForbidden || p.Status != 403 {
		t.Fatalf("poll with other credentials = %+v, want 403", p)
	}
	if p := h.post(other, `[null,"1","phoenix","heartbeat",{}]`); p.HTTP != http.StatusForbidden || p.Status != 403 {
		t.Fatalf("POST with other credentials = %+v, want 403", p)
	}
	if got := h.session(0).records(); len(got) != 0 {
		t.Fatalf("a refused POST was dispatched: %v", got)
	}
	if st := h.lp.Stats(); st.Forbidden != 2 || st.Sessions != 1 {
		t.Fatalf("stats = %+v, want 2 forbidden and the session kept", st)
	}
}

// A refused session-opening GET ends its keep-alive connection, so a
// client cannot repeat refused opens on one connection at line rate.
func TestRefusedOpenClosesConnection(t *testing.T) {
	h := newHarness(t, fast())
	h.refuse = errors.New("no")
	res, err := http.Get(h.url + "?vsn=2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	res.Body.Close()
	if !res.Close { // net/http's reading of "Connection: close"
		t.Fatal("refused open kept the connection alive")
	}
}
