package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

const testSecret = "an-hs256-test-secret-of-32-bytes!"

func mint(t *testing.T, mc auth.MintClaims) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(testSecret)}, mc)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func startAuthed(t *testing.T, mutate func(*app.Config)) *fabric {
	return startFabric(t, func(c *app.Config) {
		c.JWTSecret = testSecret
		c.JWTLeeway = -1 // no skew tolerance: expiry tests are exact
		c.AllowQueryToken = true
		if mutate != nil {
			mutate(c)
		}
	})
}

// upgrade sends a raw upgrade request and returns the response.
func upgrade(t *testing.T, addr, path string, headers map[string]string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", path)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	c.Write([]byte(b.String()))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	resp.Body = nopBody{body}
	return resp
}

type nopBody struct{ *bytes.Buffer }

func (nopBody) Close() error { return nil }

func bodyOf(r *http.Response) string { return r.Body.(nopBody).String() }

// The real phoenix client with authToken (subprotocol) and with
// params.token: granted joins succeed, others are refused while the
// connection stays up.
func TestPhoenixJSAuthenticated(t *testing.T) {
	f := startAuthed(t, nil)
	tok := mint(t, auth.MintClaims{Subject: "alice", Channels: []string{"room:*"}, Publish: []string{"room:pub"}})
	for _, mode := range []string{"authToken", "params"} {
		t.Run(mode, func(t *testing.T) {
			p := phxnode.Start(t)
			params, opts := map[string]any{}, map[string]any{}
			if mode == "authToken" {
				opts["authToken"] = tok
			} else {
				params["token"] = tok
			}
			if err := p.Connect(f.socketURL(), params, opts); err != nil {
				t.Fatal(err)
			}
			if s, _ := p.Join("room:a", nil); s != "ok" {
				t.Fatalf("granted join: %s", s)
			}
			res := p.JoinOpts("game:1", nil, map[string]any{"leaveOnError": true})
			if res.Status != "error" || string(res.Response) != `{"reason":"unauthorized"}` {
				t.Fatalf("refused join: %+v", res)
			}
			if s, _ := p.Push("room:a", "x", map[string]any{}); s != "error" {
				t.Fatalf("push without a publish grant: %s", s)
			}
			if s, _ := p.Join("room:pub", nil); s != "ok" {
				t.Fatalf("join room:pub: %s", s)
			}
			if s, _ := p.Push("room:pub", "x", map[string]any{}); s != "ok" {
				t.Fatalf("granted push: %s", s)
			}
			if st := p.State(); !st.Connected {
				t.Fatal("connection dropped after a refusal")
			}
		})
	}
	// No subscription was ever created for the refused topic.
	if n := f.interest("fabric.game.1"); n != 0 {
		t.Fatalf("%d subscriptions for a refused join", n)
	}
}

// A connection lives as long as its token; phoenix.js reconnects with a
// fresh one through its params function and rejoins.
func TestTokenExpiryClosesWith4001(t *testing.T) {
	f := startAuthed(t, nil)
	p := phxnode.Start(t)
	p.State() // Node is up: its start-up is not taken out of the token's life
	// exp has whole seconds (JWT NumericDate), so the token lives between
	// TTL-1 s and TTL: enough, on a loaded machine, to connect and join
	// before it expires (the gateway refuses an expired one with 401).
	const ttl = 5 * time.Second
	minted := time.Now()
	exp := time.Unix(minted.Add(ttl).Unix(), 0)
	short := mint(t, auth.MintClaims{Subject: "bob", Channels: []string{"room:*"}, TTL: ttl, Now: minted})
	if err := p.Connect(f.socketURL(), map[string]any{"token": short}, map[string]any{"reconnectAfterMs": 100, "rejoinAfterMs": 100}); err != nil {
		t.Fatalf("connect %v after minting (the token expires after %v): %v", time.Since(minted), exp.Sub(minted), err)
	}
	if s, _ := p.Join("room:exp", nil); s != "ok" {
		t.Fatalf("join: %s, %v after minting (the token expires after %v)", s, time.Since(minted), exp.Sub(minted))
	}
	p.Drain(phxnode.Any)
	// The app refreshes its token before the socket needs it again.
	p.SetSocketParams(map[string]any{"token": mint(t, auth.MintClaims{Subject: "bob", Channels: []string{"room:*"}})})
	closed := p.MustNext(ttl+10*time.Second, "close 4001", phxnode.IsEv("close"))
	if closed.Code != 4001 {
		t.Fatalf("close code %d", closed.Code)
	}
	// Zero leeway: the socket lives until the token's exp, not less.
	if now := time.Now(); now.Before(exp) {
		t.Fatalf("closed %v before the token's exp", exp.Sub(now))
	}
	p.MustNext(10*time.Second, "reopen", phxnode.IsEv("open"))
	p.MustNext(10*time.Second, "rejoin", func(e phxnode.Event) bool { return e.Ev == "join_reply" && e.Topic == "room:exp" })
	f.publish("fabric.room.exp", "after", []byte(`{}`))
	p.MustNext(10*time.Second, "delivery after reconnect", phxnode.IsMsg("room:exp", "after"))
}

// Refusals before the upgrade carry a status (and never a token in logs).
func TestRefusedBeforeUpgrade(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) {
		c.AllowedOrigins = []string{"https://app.example.com"}
	})
	good := mint(t, auth.MintClaims{Subject: "c", Channels: []string{"room:*"}})
	expired := mint(t, auth.MintClaims{Subject: "c", TTL: time.Second, Now: time.Now().Add(-time.Hour)})
	path := "/socket/websocket?vsn=2.0.0"
	cases := []struct {
		name    string
		path    string
		headers map[string]string
		status  int
		reason  string
	}{
		{"no token", path, nil, 401, "missing_token"},
		{"garbage token", path + "&token=abc.def.ghi", nil, 401, "invalid_token"},
		{"expired token", path + "&token=" + expired, nil, 401, "token_expired"},
		{"alg none", path + "&token=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.", nil, 401, "invalid_token"},
		{"bad origin, good token", path + "&token=" + good, map[string]string{"Origin": "https://evil.example"}, 403, "origin_not_allowed"},
		{"good origin", path + "&token=" + good, map[string]string{"Origin": "https://app.example.com"}, 101, ""},
		{"subprotocol token", path, map[string]string{"Sec-WebSocket-Protocol": "phoenix, " + auth.EncodeSubprotocol(good)}, 101, ""},
		{"bad vsn", "/socket/websocket?vsn=9.0.0&token=" + good, nil, 400, "unsupported_vsn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := upgrade(t, f.HTTPAddr(), tc.path, tc.headers)
			if r.StatusCode != tc.status || (tc.reason != "" && !strings.Contains(bodyOf(r), `"reason":"`+tc.reason+`"`)) {
				t.Fatalf("status %d body %q, want %d %s", r.StatusCode, bodyOf(r), tc.status, tc.reason)
			}
		})
	}
}

// Every limit has its outcome, and healthy clients keep receiving.
func TestLimits(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.MaxConnections = 3
		c.MaxConnectionsPerIP = 2
		c.JoinRate = 2
	})
	healthy := f.dial(phoenix.V2, phxclient.Options{})
	joinPos(t, healthy, "room:ok", nil)

	// Per address: the third connection from 127.0.0.1 gets 429.
	second := f.dial(phoenix.V2, phxclient.Options{})
	r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0", nil)
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("per-IP limit: %d %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// Per gateway: from another loopback address, the fourth gets 503.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	third, err := phxclient.Dial(ctx, f.wsURL("2.0.0"), phoenix.V2, phxclient.Options{LocalIP: "127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	c, err := d.Dial("tcp", f.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	c.Close()
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("gateway cap: %v %v", resp, err)
	}
	if st := f.Gateway().Stats(); st.Refused["per_ip"] == 0 || st.Refused["overload"] == 0 {
		t.Fatalf("refusals not counted: %v", st.Refused)
	}

	// Join rate: a burst of joins gets rate_limited with retry_after_ms.
	limited := 0
	for i := 0; i < 10; i++ {
		ref, _ := second.Join(fmt.Sprintf("room:r%d", i), nil)
		status, resp, err := second.WaitReply(ref, wait)
		if err != nil {
			t.Fatal(err)
		}
		if status == "error" && strings.Contains(string(resp), `"reason":"rate_limited","retry_after_ms":`) {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no join was rate limited")
	}
	// Sustained abuse closes with 4029.
	for i := 0; i < 100; i++ {
		if _, err := second.Join(fmt.Sprintf("room:x%d", i), nil); err != nil {
			break
		}
	}
	m, err := second.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close })
	if err != nil || m.CloseCode != 4029 {
		t.Fatalf("abuse: %+v %v", m, err)
	}
	// The healthy client was never affected.
	f.publish("fabric.room.ok", "still", []byte(`{}`))
	if _, err := healthy.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "still" }); err != nil {
		t.Fatal(err)
	}
}

// A per-join token admits one topic the connection's grants do not cover.
func TestPerJoinToken(t *testing.T) {
	f := startAuthed(t, nil)
	conn := mint(t, auth.MintClaims{Subject: "carol", Channels: []string{"room:*"}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := phxclient.Dial(ctx, f.wsURL("2.0.0")+"&token="+conn, phoenix.V2, phxclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, _, _ := c.JoinWait("vip:1", nil, wait); s != "error" {
		t.Fatalf("vip without a join token: %s", s)
	}
	jt := mint(t, auth.MintClaims{Subject: "carol", Type: auth.TypeJoin, Channel: "vip:1", TTL: time.Minute})
	if s, r, _ := c.JoinWait("vip:1", map[string]any{"token": jt}, wait); s != "ok" {
		t.Fatalf("vip with a join token: %s %s", s, r)
	}
	if s, _, _ := c.JoinWait("vip:2", map[string]any{"token": jt}, wait); s != "error" {
		t.Fatal("a join token for vip:1 admitted vip:2")
	}
	other := mint(t, auth.MintClaims{Subject: "mallory", Type: auth.TypeJoin, Channel: "vip:3", TTL: time.Minute})
	if s, _, _ := c.JoinWait("vip:3", map[string]any{"token": other}, wait); s != "error" {
		t.Fatal("another user's join token was accepted")
	}
	// A join token is not a connection token.
	r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0&token="+jt, nil)
	if r.StatusCode != 401 {
		t.Fatalf("join token as connection token: %d", r.StatusCode)
	}
}
