package phxnode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// wait bounds every wait in these tests; generous because CI machines can be loaded.
const wait = 10 * time.Second

// mockServer is a tiny Phoenix v2 WebSocket server, just enough to exercise the harness.
type mockServer struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	conns    []*mockConn
	received [][]any // every decoded text frame from clients
	bins     [][]byte
	newConn  chan *mockConn
	protocol string // Sec-WebSocket-Protocol selected for the last connection
	query    string // query string of the last connection
}

type mockConn struct {
	net.Conn
	wmu sync.Mutex
}

func (c *mockConn) write(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteServerMessage(c.Conn, op, p)
}

func (c *mockConn) writeJSON(v []any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(ws.OpText, b)
}

func newMockServer(t *testing.T) *mockServer {
	m := &mockServer{t: t, newConn: make(chan *mockConn, 16)}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(func() {
		m.mu.Lock()
		for _, c := range m.conns {
			_ = c.Close()
		}
		m.mu.Unlock()
		m.srv.Close()
	})
	return m
}

func (m *mockServer) url() string {
	return "ws://" + strings.TrimPrefix(m.srv.URL, "http://") + "/socket"
}

func (m *mockServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/socket/websocket" {
		http.NotFound(w, r)
		return
	}
	var selected string
	u := ws.HTTPUpgrader{Protocol: func(p string) bool {
		if p == "phoenix" {
			selected = p
			return true
		}
		return false
	}}
	conn, _, _, err := u.Upgrade(r, w)
	if err != nil {
		return
	}
	c := &mockConn{Conn: conn}
	m.mu.Lock()
	m.conns = append(m.conns, c)
	m.protocol = selected
	m.query = r.URL.RawQuery
	m.mu.Unlock()
	m.newConn <- c
	go m.loop(c)
}

func (m *mockServer) loop(c *mockConn) {
	defer c.Close()
	for {
		data, op, err := wsutil.ReadClientData(c)
		if err != nil {
			return
		}
		if op == ws.OpBinary {
			m.mu.Lock()
			m.bins = append(m.bins, data)
			m.mu.Unlock()
			m.handleBinary(c, data)
			continue
		}
		var msg []any
		if err := json.Unmarshal(data, &msg); err != nil || len(msg) != 5 {
			m.t.Errorf("mock: bad frame %q", data)
			return
		}
		m.mu.Lock()
		m.received = append(m.received, msg)
		m.mu.Unlock()
		joinRef, ref, topic, event, payload := msg[0], msg[1], msg[2].(string), msg[3].(string), msg[4]
		reply := func(status string, response any) {
			_ = c.writeJSON([]any{joinRef, ref, topic, "phx_reply", map[string]any{"status": status, "response": response}})
		}
		switch {
		case topic == "phoenix" && event == "heartbeat":
			reply("ok", map[string]any{})
		case event == "phx_join":
			if p, _ := payload.(map[string]any); p != nil && p["refuse"] == true {
				reply("error", map[string]any{"reason": "unauthorized"})
			} else {
				reply("ok", map[string]any{})
			}
		case event == "phx_leave":
			reply("ok", map[string]any{})
			_ = c.writeJSON([]any{joinRef, joinRef, topic, "phx_close", map[string]any{}})
		case event == "custom_status":
			reply("weird", map[string]any{"x": 1})
		default:
			reply("ok", payload)
		}
	}
}

// handleBinary answers a client binary push (kind 0) with an ok reply echoing the payload
// as a binary reply (kind 1).
func (m *mockServer) handleBinary(c *mockConn, b []byte) {
	if len(b) < 5 || b[0] != 0 {
		m.t.Errorf("mock: bad binary frame % x", b)
		return
	}
	jl, rl, tl, el := int(b[1]), int(b[2]), int(b[3]), int(b[4])
	off := 5
	joinRef := b[off : off+jl]
	off += jl
	ref := b[off : off+rl]
	off += rl
	topic := b[off : off+tl]
	off += tl + el
	payload := b[off:]
	status := []byte("ok")
	out := []byte{1, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(status))}
	out = append(out, joinRef...)
	out = append(out, ref...)
	out = append(out, topic...)
	out = append(out, status...)
	out = append(out, payload...)
	_ = c.write(ws.OpBinary, out)
}

func binaryBroadcast(topic, event string, payload []byte) []byte {
	out := []byte{2, byte(len(topic)), byte(len(event))}
	out = append(out, topic...)
	out = append(out, event...)
	return append(out, payload...)
}

func (m *mockServer) waitConn(t *testing.T) *mockConn {
	t.Helper()
	select {
	case c := <-m.newConn:
		return c
	case <-time.After(wait):
		t.Fatal("mock: no connection")
		return nil
	}
}

func (m *mockServer) sawFrame(match func([]any) bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.received {
		if match(f) {
			return true
		}
	}
	return false
}

func TestPuppetAgainstMockServer(t *testing.T) {
	m := newMockServer(t)
	p := Start(t)

	if err := p.Connect(m.url(), map[string]any{"token": "t 1"}, map[string]any{
		"heartbeatIntervalMs": 500, "reconnectAfterMs": 200, "rejoinAfterMs": 200, "timeout": 3000,
	}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	c := m.waitConn(t)
	p.MustNext(wait, "open", IsEv("open"))
	m.mu.Lock()
	proto, query := m.protocol, m.query
	m.mu.Unlock()
	if proto != "" {
		t.Errorf("no authToken, yet subprotocol %q was selected", proto)
	}
	if query != "token=t%201&vsn=2.0.0" {
		t.Errorf("query = %q", query)
	}

	st, resp := p.Join("room:1", map[string]any{"last_seen": 7})
	if st != "ok" || string(resp) != "{}" {
		t.Fatalf("join = %s %s", st, resp)
	}
	if !m.sawFrame(func(f []any) bool {
		p, _ := f[4].(map[string]any)
		return f[3] == "phx_join" && f[2] == "room:1" && f[0] == f[1] && p["last_seen"] == float64(7)
	}) {
		t.Error("server did not see the phx_join with its params")
	}
	if s := p.State(); !s.Connected || s.Transport != "websocket" || s.Channels["room:1"] != "joined" {
		t.Errorf("state = %+v", s)
	}

	// JSON broadcast with a ref (Fabric puts stream offsets there)
	if err := c.writeJSON([]any{nil, "42", "room:1", "new_msg", map[string]any{"body": "hi"}}); err != nil {
		t.Fatal(err)
	}
	e := p.MustNext(wait, "new_msg", IsMsg("room:1", "new_msg"))
	if e.Ref == nil || *e.Ref != "42" || string(e.Payload) != `{"body":"hi"}` || e.Binary {
		t.Errorf("broadcast event = %s", e.Raw)
	}

	// binary broadcast (kind 2)
	bin := []byte{0, 1, 2, 0xff, 'x'}
	if err := c.write(ws.OpBinary, binaryBroadcast("room:1", "blob", bin)); err != nil {
		t.Fatal(err)
	}
	e = p.MustNext(wait, "blob", IsMsg("room:1", "blob"))
	if !e.Binary || !bytes.Equal(e.Bytes(), bin) || e.Ref != nil {
		t.Errorf("binary event = %s (bytes % x)", e.Raw, e.Bytes())
	}

	// a message with a stale join_ref is dropped by the client
	if err := c.writeJSON([]any{"999", nil, "room:1", "stale", map[string]any{}}); err != nil {
		t.Fatal(err)
	}

	// push with reply
	st, resp = p.Push("room:1", "echo", map[string]any{"n": 1, "s": "é"})
	if st != "ok" || string(resp) != `{"n":1,"s":"é"}` {
		t.Errorf("push = %s %s", st, resp)
	}
	// a non-standard reply status still answers the command
	if r := p.PushOpts("room:1", "custom_status", nil, nil); r.Status != "weird" || string(r.Response) != `{"x":1}` {
		t.Errorf("custom status push = %+v", r)
	}
	// binary push, answered with a binary reply
	r := p.PushOpts("room:1", "bin", []byte{7, 7, 7}, nil)
	if r.Status != "ok" || !r.Binary || string(r.Response) != `"BwcH"` {
		t.Errorf("binary push = %+v", r)
	}
	m.mu.Lock()
	var lastBin []byte
	if len(m.bins) > 0 {
		lastBin = m.bins[len(m.bins)-1]
	}
	m.mu.Unlock()
	if !bytes.HasSuffix(lastBin, []byte("room:1bin\x07\x07\x07")) || lastBin[0] != 0 {
		t.Errorf("server got binary push % x", lastBin)
	}

	// ping
	if rtt, err := p.Ping(); err != nil || rtt < 0 || rtt > 5*time.Second {
		t.Errorf("ping = %v, %v", rtt, err)
	}
	// heartbeats flow (interval 500 ms)
	deadline := time.Now().Add(wait)
	for !m.sawFrame(func(f []any) bool { return f[2] == "phoenix" && f[3] == "heartbeat" && f[0] == nil }) {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat seen")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// the stale message never surfaced; nothing else unexpected on the channel
	if extra := p.Drain(IsMsg("room:1", "")); len(extra) != 0 {
		t.Errorf("unexpected channel messages: %v", extra)
	}

	// leave
	p.Leave("room:1")
	ce := p.MustNext(wait, "chan_close", OnTopic("chan_close", "room:1"))
	if string(ce.Payload) != `"leave"` {
		t.Errorf("chan_close payload = %s", ce.Payload)
	}
	deadline = time.Now().Add(wait)
	for !m.sawFrame(func(f []any) bool { return f[2] == "room:1" && f[3] == "phx_leave" }) {
		if time.Now().After(deadline) {
			t.Fatal("server saw no phx_leave")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := p.State(); s.Channels["room:1"] != "closed" {
		t.Errorf("after leave state = %+v", s)
	}

	// refused join, without automatic retries
	jr := p.JoinOpts("room:2", map[string]any{"refuse": true}, map[string]any{"leaveOnError": true})
	if jr.Status != "error" || string(jr.Response) != `{"reason":"unauthorized"}` {
		t.Errorf("refused join = %+v", jr)
	}
	p.MustNext(wait, "chan_close room:2", OnTopic("chan_close", "room:2"))

	// presence
	if r := p.JoinOpts("room:p", nil, map[string]any{"presence": true}); r.Status != "ok" {
		t.Fatalf("presence join = %+v", r)
	}
	if err := c.writeJSON([]any{nil, nil, "room:p", "presence_state", map[string]any{
		"u1": map[string]any{"metas": []any{map[string]any{"phx_ref": "a", "x": 1}}},
	}}); err != nil {
		t.Fatal(err)
	}
	ps := p.MustNext(wait, "presence_sync", OnTopic("presence_sync", "room:p"))
	if l := ps.PresenceList(); len(l) != 1 || l[0].Key != "u1" || len(l[0].Metas) != 1 || l[0].Metas[0]["phx_ref"] != "a" {
		t.Errorf("presence list = %s", ps.Raw)
	}
	p.MustNext(wait, "presence_state msg", IsMsg("room:p", "presence_state"))

	// push to an unknown topic is a command error
	if _, err := p.Do(map[string]any{"cmd": "push", "topic": "nope", "event": "x", "payload": map[string]any{}}); err == nil {
		t.Error("push to unknown topic succeeded")
	}

	// server-side close: phoenix.js 1.8.16 reconnects; the channel rejoins
	if r := p.JoinOpts("room:3", nil, nil); r.Status != "ok" {
		t.Fatalf("join room:3 = %+v", r)
	}
	if n := len(p.Drain(OnTopic("join_reply", "room:3"))); n != 1 {
		t.Errorf("%d join_reply events for the first join", n)
	}
	_ = c.Close()
	p.MustNext(wait, "close", IsEv("close"))
	p.MustNext(wait, "chan_error room:3", OnTopic("chan_error", "room:3"))
	m.waitConn(t)
	p.MustNext(wait, "reopen", IsEv("open"))
	jre := p.MustNext(wait, "rejoin", OnTopic("join_reply", "room:3"))
	var status string
	if err := jre.Field("status", &status); err != nil || status != "ok" {
		t.Errorf("rejoin reply = %s", jre.Raw)
	}
	joinRefs := map[any]bool{}
	m.mu.Lock()
	for _, f := range m.received {
		if f[2] == "room:3" && f[3] == "phx_join" {
			joinRefs[f[0]] = true
		}
	}
	m.mu.Unlock()
	if len(joinRefs) != 2 {
		t.Errorf("want 2 distinct join_refs for room:3 (join + rejoin), got %v", joinRefs)
	}

	p.Disconnect(0, "")
	if s := p.State(); s.Connected {
		t.Errorf("still connected after disconnect: %+v", s)
	}
}

func TestPuppetAuthTokenSubprotocol(t *testing.T) {
	m := newMockServer(t)
	p := Start(t)
	if err := p.Connect(m.url(), nil, map[string]any{"authToken": "secret"}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	m.waitConn(t)
	m.mu.Lock()
	proto := m.protocol
	m.mu.Unlock()
	if proto != "phoenix" {
		t.Errorf("selected subprotocol %q", proto)
	}
}

func TestPuppetConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	p := Start(t)
	err = p.Connect(fmt.Sprintf("ws://%s/socket", addr), nil, map[string]any{"reconnectAfterMs": 1000})
	if err == nil || !strings.Contains(err.Error(), "ECONNREFUSED") {
		t.Fatalf("connect to closed port: err = %v", err)
	}
	e := p.MustNext(wait, "error", IsEv("error"))
	if !strings.Contains(e.Message, "ECONNREFUSED") {
		t.Errorf("error event = %s", e.Raw)
	}
	ce := p.MustNext(wait, "close", IsEv("close"))
	if ce.Code != 1006 {
		t.Errorf("close event = %s", ce.Raw)
	}
	if s := p.State(); s.Connected || s.EverOpened {
		t.Errorf("state = %+v", s)
	}
	if _, err := p.Ping(); err == nil {
		t.Error("ping succeeded while not connected")
	}
}

func TestNextKeepsOrderAndDrain(t *testing.T) {
	p := &Puppet{notify: make(chan struct{}), readerDone: make(chan struct{})}
	for i, ev := range []string{"a", "b", "a", "c"} {
		p.events = append(p.events, Event{Ev: ev, Code: i})
	}
	if e, ok := p.Next(0, IsEv("c")); !ok || e.Code != 3 {
		t.Fatalf("Next c = %+v %v", e, ok)
	}
	if got := p.Drain(IsEv("a")); len(got) != 2 || got[0].Code != 0 || got[1].Code != 2 {
		t.Fatalf("Drain a = %+v", got)
	}
	if e, ok := p.Next(10*time.Millisecond, nil); !ok || e.Ev != "b" {
		t.Fatalf("Next = %+v %v", e, ok)
	}
	if _, ok := p.Next(10*time.Millisecond, nil); ok {
		t.Fatal("Next on empty buffer succeeded")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.mu.Lock()
		p.events = append(p.events, Event{Ev: "late"})
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}()
	if e, ok := p.Next(2*time.Second, IsEv("late")); !ok || e.Ev != "late" {
		t.Fatalf("Next late = %+v %v", e, ok)
	}
}
