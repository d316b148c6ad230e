package longpoll

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// miniPhoenix is a tiny Phoenix v2 session: enough to drive the real client.
type miniPhoenix struct {
	conn   transport.Conn
	closes chan transport.CloseCode
	joins  *atomic.Int32
}

func (m *miniPhoenix) send(v []any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	m.conn.Send(transport.NewText(b))
}

func (m *miniPhoenix) HandleMessage(binary bool, data []byte) {
	if binary {
		// v2 push: kind 0, then join_ref, ref, topic and event lengths.
		if len(data) < 5 || data[0] != 0 {
			return
		}
		jl, rl, tl, el := int(data[1]), int(data[2]), int(data[3]), int(data[4])
		b := data[5:]
		if len(b) < jl+rl+tl+el {
			return
		}
		jr, ref, topic := string(b[:jl]), string(b[jl:jl+rl]), string(b[jl+rl:jl+rl+tl])
		n := len(b) - jl - rl - tl - el
		// JSON-only reply: LongPoll never carries binary frames to the client.
		m.send([]any{jr, ref, topic, "phx_reply", map[string]any{"status": "ok", "response": map[string]any{"bytes": n}}})
		return
	}
	var f []json.RawMessage
	if err := json.Unmarshal(data, &f); err != nil || len(f) != 5 {
		return
	}
	var joinRef, ref *string
	var topic, event string
	_ = json.Unmarshal(f[0], &joinRef)
	_ = json.Unmarshal(f[1], &ref)
	_ = json.Unmarshal(f[2], &topic)
	_ = json.Unmarshal(f[3], &event)
	payload := f[4]
	ok := func(resp any) {
		m.send([]any{joinRef, ref, topic, "phx_reply", map[string]any{"status": "ok", "response": resp}})
	}
	switch event {
	case "heartbeat", "phx_join":
		if event == "phx_join" {
			m.joins.Add(1)
		}
		ok(map[string]any{})
	case "phx_leave":
		ok(map[string]any{})
		m.send([]any{joinRef, joinRef, topic, "phx_close", map[string]any{}})
	case "shout":
		ok(map[string]any{})
		m.send([]any{nil, "7", topic, "shout", payload})
	default:
		ok(payload)
	}
}

func (m *miniPhoenix) HandleClose(code transport.CloseCode) { m.closes <- code }

func TestRealClientLongPoll(t *testing.T) {
	// IdleTimeout leaves a loaded machine (CI, -race) seconds between one
	// poll's answer and the client's next poll; only the deliberate stall
	// below may outlast it.
	const idle = 3 * time.Second
	lp := New(Config{PollWindow: 500 * time.Millisecond, IdleTimeout: idle})
	closes := make(chan transport.CloseCode, 16)
	var joins atomic.Int32
	var stall atomic.Bool // stall the next poll past IdleTimeout (a network hiccup)
	var queries sync.Map

	mux := http.NewServeMux()
	mux.HandleFunc("/socket/longpoll", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.RawQuery, "token=lp1.") && stall.CompareAndSwap(true, false) {
			time.Sleep(idle + 2*time.Second)
		}
		lp.Serve(w, r, func(r *http.Request) (func(transport.Conn) transport.Session, error) {
			queries.Store(r.URL.RawQuery, true)
			return func(c transport.Conn) transport.Session {
				return &miniPhoenix{conn: c, closes: closes, joins: &joins}
			}, nil
		})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lp.Shutdown(ctx)
	})
	url := "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/socket"

	p := phxnode.Start(t)
	if err := p.Connect(url, map[string]any{"token": "user-1"}, map[string]any{
		"longpoll": true, "reconnectAfterMs": 200, "rejoinAfterMs": 200, "heartbeatIntervalMs": 60000,
	}); err != nil {
		t.Fatalf("connect over LongPoll: %v", err)
	}
	if st := p.State(); st.Transport != "longpoll" || !st.Connected {
		t.Fatalf("state = %+v", st)
	}
	// accept saw the user's token param (first GET: "token=user-1&vsn=2.0.0&").
	var sawUser bool
	queries.Range(func(k, _ any) bool {
		sawUser = sawUser || strings.Contains(k.(string), "token=user-1")
		return true
	})
	if !sawUser {
		t.Fatalf("accept never saw the user's token")
	}

	if status, resp := p.Join("room:1", map[string]any{"last_seen": 0}); status != "ok" {
		t.Fatalf("join = %s %s", status, resp)
	}
	p.MustNext(5*time.Second, "join_reply", phxnode.OnTopic("join_reply", "room:1"))

	status, resp := p.Push("room:1", "echo", map[string]any{"body": "hi \"there\" é"})
	if status != "ok" || string(resp) != `{"body":"hi \"there\" é"}` {
		t.Fatalf("push = %s %s", status, resp)
	}
	if status, _ := p.Push("room:1", "shout", map[string]any{"n": 1}); status != "ok" {
		t.Fatalf("shout = %s", status)
	}
	e := p.MustNext(5*time.Second, "shout broadcast", phxnode.IsMsg("room:1", "shout"))
	if e.RefString() != "7" || string(e.Payload) != `{"n":1}` {
		t.Fatalf("broadcast = %s", e)
	}
	// A binary push travels as a base64 ndjson line and is answered (JSON).
	if status, resp := p.Push("room:1", "bin", []byte{1, 2, 3}); status != "ok" || string(resp) != `{"bytes":3}` {
		t.Fatalf("binary push = %s %s", status, resp)
	}
	if st := p.State(); st.ConnectionState != "open" {
		t.Fatalf("socket not open after binary push: %+v", st)
	}

	p.Leave("room:1")
	p.MustNext(5*time.Second, "chan_close", phxnode.OnTopic("chan_close", "room:1"))
	if status, _ := p.Join("room:1", nil); status != "ok" {
		t.Fatalf("second join = %s", status)
	}
	p.MustNext(5*time.Second, "join_reply", phxnode.OnTopic("join_reply", "room:1"))
	p.Drain(phxnode.Any)

	// Session expiry: the next poll arrives after IdleTimeout, the session is
	// gone, the client gets 410, closes with 3410, reconnects and rejoins.
	joinsBefore := joins.Load()
	stall.Store(true)
	select {
	case code := <-closes:
		if code != transport.CloseHeartbeatTimeout {
			t.Fatalf("session ended with %d, want 4000", code)
		}
	case <-time.After(idle + 15*time.Second):
		t.Fatalf("session did not expire")
	}
	e = p.MustNext(15*time.Second, "socket close", phxnode.IsEv("close"))
	if e.Code != 3410 {
		t.Fatalf("client close = %s, want 3410", e)
	}
	r := p.MustNext(5*time.Second, "rejoin", phxnode.OnTopic("join_reply", "room:1"))
	var st string
	_ = r.Field("status", &st)
	if st != "ok" || joins.Load() <= joinsBefore {
		t.Fatalf("rejoin = %s (joins %d → %d)", r, joinsBefore, joins.Load())
	}
	// And the new session works.
	if status, _ := p.Push("room:1", "shout", map[string]any{"n": 2}); status != "ok" {
		t.Fatalf("shout after rejoin = %s", status)
	}
	e = p.MustNext(5*time.Second, "shout broadcast", phxnode.IsMsg("room:1", "shout"))
	if string(e.Payload) != `{"n":2}` {
		t.Fatalf("broadcast = %s", e)
	}

	// Server-side close (e.g. token expiry): the client sees the session gone
	// and comes back by itself.
	lp.mu.Lock()
	var cur *lpSession
	for _, c := range lp.sessions {
		cur = c
	}
	lp.mu.Unlock()
	cur.Close(transport.CloseTokenExpired, "token expired")
	if code := <-closes; code != transport.CloseTokenExpired {
		t.Fatalf("close code %d", code)
	}
	if e := p.MustNext(5*time.Second, "socket close", phxnode.IsEv("close")); e.Code != 3410 {
		t.Fatalf("client close = %s, want 3410", e)
	}
	p.MustNext(5*time.Second, "rejoin", phxnode.OnTopic("join_reply", "room:1"))
	if lp.Len() != 1 {
		t.Fatalf("Len = %d, want 1", lp.Len())
	}
	p.Disconnect(0, "")
}
