package browser

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// entry is one thing page.js recorded in window.fabricLog.
type entry struct {
	Ev        string          `json:"ev"`
	Event     string          `json:"event"`
	Ref       *string         `json:"ref"`
	Binary    bool            `json:"binary"`
	Payload   json.RawMessage `json:"payload"`
	Status    string          `json:"status"`
	Resp      json.RawMessage `json:"resp"`
	Transport string          `json:"transport"`
	Code      *int            `json:"code"`
}

func (b *browser) pageLog() []entry {
	b.t.Helper()
	var log []entry
	b.eval(`window.fabricLog`, &log)
	return log
}

// startGateway runs an in-process Fabric; stopped when the test ends
// (unless the test stops it first).
func startGateway(t *testing.T, cfg app.Config) *app.App {
	t.Helper()
	var a *app.App
	var err error
	// A restart reuses the previous listen address: retry briefly should
	// the port not be free yet.
	for deadline := time.Now().Add(5 * time.Second); ; {
		a, err = app.Start(cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start fabric: %v", err)
	}
	t.Cleanup(func() { stopGateway(a) })
	return a
}

func stopGateway(a *app.App) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = a.Shutdown(ctx) // a second Shutdown (cleanup after a restart) is a no-op
}

// The official phoenix client in Chromium joins with authToken, receives
// JSON and binary broadcasts, survives a gateway restart on the same
// address, and through phoenix-resume.js gets everything published while
// the gateway was down, in order, nothing missing, then live messages again.
func TestPhoenixResumeAcrossRestart(t *testing.T) {
	requireBrowser(t)
	arts := artifactsDir(t)
	t.Logf("artifacts: %s", arts)

	// NATS outlives the gateway, as in production.
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "browser-test-secret-0123456789abcdef"
	cfg := app.Config{
		Listen:          "127.0.0.1:0",
		OpsListen:       "off",
		NATSURL:         ns.ClientURL(),
		JWTSecret:       secret,
		AllowQueryToken: true,
		LeaveGrace:      50 * time.Millisecond,
		Home:            testPages(t),
	}
	g1 := startGateway(t, cfg)
	cfg.Listen = g1.HTTPAddr() // the restarted gateway takes the same address
	token, err := auth.Mint(auth.Config{Secret: []byte(secret)}, auth.MintClaims{Subject: "browser-test", Channels: []string{"room:*"}})
	if err != nil {
		t.Fatal(err)
	}

	// Message i: JSON event "chat" {"i": i}, except 1 and 5, binary event
	// "blob" with bytes fa b1 i (not JSON, so a binary frame).
	isBinary := func(i int) bool { return i == 1 || i == 5 }
	publish := func(i int) {
		t.Helper()
		m := nats.NewMsg("fabric.room.resume")
		if isBinary(i) {
			m.Header.Set("Fabric-Event", "blob")
			m.Data = []byte{0xfa, 0xb1, byte(i)}
		} else {
			m.Header.Set("Fabric-Event", "chat")
			m.Data = fmt.Appendf(nil, `{"i":%d,"text":"message %d"}`, i, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.PublishMsg(ctx, m); err != nil { // stored once acked
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	received := func(n int) string { // JS: n application messages arrived
		// (and every blob's fabric:offset frame, which follows it)
		return fmt.Sprintf(`((n) => { const l = window.fabricLog.filter((e) => e.ev === "msg");
			const count = (ev) => l.filter((e) => e.event === ev).length;
			return count("chat") + count("blob") >= n && count("fabric:offset") === count("blob") })(%d)`, n)
	}

	b := startBrowser(t)
	start := time.Now()
	b.open(fmt.Sprintf("http://%s/page.html?topic=room:resume&resume=1&token=%s", g1.HTTPAddr(), url.QueryEscape(token)), 1000, 700)
	b.wait("join", `window.fabricLog.some((e) => e.ev === "join" && e.status === "ok")`, 15*time.Second)
	t.Logf("joined after %v", time.Since(start).Round(time.Millisecond))

	for i := 0; i < 3; i++ {
		publish(i)
	}
	b.wait("messages 0-2", received(3), 10*time.Second)

	// Restart: the page's socket drops, messages 3-7 are published meanwhile.
	restart := time.Now()
	stopGateway(g1)
	b.wait("socket close", `window.fabricLog.some((e) => e.ev === "close" || e.ev === "error")`, 15*time.Second)
	for i := 3; i < 8; i++ {
		publish(i)
	}
	g2 := startGateway(t, cfg)
	if g2.HTTPAddr() != g1.HTTPAddr() {
		t.Fatalf("restarted on %s, want %s", g2.HTTPAddr(), g1.HTTPAddr())
	}
	b.wait("rejoin", `window.fabricLog.filter((e) => e.ev === "join" && e.status === "ok").length >= 2`, 20*time.Second)
	b.wait("replayed messages 3-7", received(8), 10*time.Second)
	t.Logf("rejoined and replayed %v after the restart began", time.Since(restart).Round(time.Millisecond))
	publish(8) // live again
	b.wait("live message 8", received(9), 10*time.Second)

	plog := b.pageLog()
	b.screenshot(filepath.Join(arts, "phoenix-resume.png"))

	// Check the whole log: every message once, in order, with increasing
	// offsets; the second join recovered; 3-7 arrived after it.
	var (
		is, offsets          []int
		joins, opens, closes int
		rejoinAt             = -1
		indexOf              = map[int]int{}
	)
	for k := 0; k < len(plog); k++ {
		e := plog[k]
		switch e.Ev {
		case "open":
			opens++
			if e.Transport != "WebSocket" {
				t.Errorf("open over %s, want WebSocket", e.Transport)
			}
		case "close":
			closes++
		case "gap":
			t.Errorf("onGap called: %s", e.Payload)
		case "join":
			if e.Status != "ok" {
				t.Fatalf("join %s: %s", e.Status, e.Resp)
			}
			joins++
			var r struct {
				Recovered *bool  `json:"recovered"`
				Epoch     string `json:"epoch"`
			}
			_ = json.Unmarshal(e.Resp, &r)
			if r.Epoch == "" {
				t.Errorf("join reply without epoch: %s", e.Resp)
			}
			if joins == 2 {
				rejoinAt = k
				if r.Recovered == nil || !*r.Recovered {
					t.Errorf("rejoin after restart did not recover: %s", e.Resp)
				}
			}
		case "msg":
			var i, off int
			switch e.Event {
			case "presence_state", "presence_diff":
				continue // Fabric tracks presence on every room; not this test's subject
			case "chat":
				var p struct{ I int }
				if err := json.Unmarshal(e.Payload, &p); err != nil || e.Binary {
					t.Fatalf("chat payload %s (binary %v): %v", e.Payload, e.Binary, err)
				}
				i = p.I
				off = refInt(t, e)
			case "blob":
				var s string
				_ = json.Unmarshal(e.Payload, &s)
				raw, err := base64.StdEncoding.DecodeString(s)
				if !e.Binary || err != nil || len(raw) != 3 || raw[0] != 0xfa || raw[1] != 0xb1 {
					t.Fatalf("blob payload %q (binary %v), want ArrayBuffer fa b1 <i>", raw, e.Binary)
				}
				i = int(raw[2])
				if k+1 >= len(plog) || plog[k+1].Event != "fabric:offset" {
					t.Fatalf("binary message %d not followed by fabric:offset", i)
				}
				k++
				off = refInt(t, plog[k])
			default:
				t.Fatalf("unexpected event %q: %s", e.Event, e.Payload)
			}
			if isBinary(i) != (e.Event == "blob") {
				t.Errorf("message %d arrived as %s", i, e.Event)
			}
			indexOf[i] = k
			is = append(is, i)
			offsets = append(offsets, off)
		}
	}
	if fmt.Sprint(is) != "[0 1 2 3 4 5 6 7 8]" {
		t.Fatalf("received messages %v, want 0..8 once each in order", is)
	}
	for k := 1; k < len(offsets); k++ {
		if offsets[k] <= offsets[k-1] {
			t.Fatalf("offsets not increasing: %v", offsets)
		}
	}
	if joins != 2 || opens < 2 || closes < 1 {
		t.Fatalf("joins %d, opens %d, closes %d; want 2 joins and a reconnect", joins, opens, closes)
	}
	if indexOf[3] < rejoinAt {
		t.Fatalf("message 3 arrived before the rejoin (at %d < %d): not a replay", indexOf[3], rejoinAt)
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
	t.Logf("offsets %v", offsets)
}

func refInt(t *testing.T, e entry) int {
	t.Helper()
	if e.Ref == nil {
		t.Fatalf("%s without an offset in its ref", e.Event)
	}
	n, err := strconv.Atoi(*e.Ref)
	if err != nil {
		t.Fatalf("%s ref %q is not an offset", e.Event, *e.Ref)
	}
	return n
}

// With /socket/websocket blocked by a proxy in front of the gateway, the
// official client's longPollFallbackMs moves the page to LongPoll, which
// joins and receives a message published with nats.go.
func TestPhoenixLongPollFallback(t *testing.T) {
	requireBrowser(t)
	arts := artifactsDir(t)
	t.Logf("artifacts: %s", arts)

	g := startGateway(t, app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		LeaveGrace: 50 * time.Millisecond,
		Home:       testPages(t),
	})
	nc, err := nats.Connect(g.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	// The proxy: WebSocket upgrades refused (as by a proxy that cannot
	// pass them), everything else (page, LongPoll) passed through.
	var wsTries, lpRequests atomic.Int64
	upstream := &url.URL{Scheme: "http", Host: g.HTTPAddr()}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a long poll cut by the browser's exit is no news
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/socket/websocket":
			wsTries.Add(1)
			http.Error(w, "WebSocket blocked by the test proxy", http.StatusForbidden)
			return
		case "/socket/longpoll":
			lpRequests.Add(1)
		}
		rp.ServeHTTP(w, r)
	})}
	ln := listenLoopback(t)
	go func() { _ = proxy.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if proxy.Shutdown(ctx) != nil {
			proxy.Close()
		}
	})

	b := startBrowser(t)
	start := time.Now()
	b.open(fmt.Sprintf("http://%s/page.html?topic=room:fallback&fallback=500", ln.Addr()), 1000, 700)
	b.wait("join over LongPoll", `window.fabricLog.some((e) => e.ev === "join" && e.status === "ok")`, 20*time.Second)
	t.Logf("joined after %v", time.Since(start).Round(time.Millisecond))

	var state struct {
		IsLongPoll bool    `json:"isLongPoll"`
		Stored     *string `json:"stored"`
		Connected  bool    `json:"connected"`
	}
	b.eval(`({ isLongPoll: window.fabric.socket.transport === window.fabric.LongPoll,
		stored: sessionStorage.getItem("phx:fallback:LongPoll"),
		connected: window.fabric.socket.isConnected() })`, &state)
	if !state.IsLongPoll || state.Stored == nil || *state.Stored != "true" || !state.Connected {
		t.Fatalf("after fallback: socket.transport === LongPoll %v, sessionStorage phx:fallback:LongPoll %v, connected %v",
			state.IsLongPoll, state.Stored, state.Connected)
	}
	if wsTries.Load() == 0 {
		t.Fatal("the page never tried the WebSocket: the fallback was not exercised")
	}

	m := nats.NewMsg("fabric.room.fallback")
	m.Header.Set("Fabric-Event", "chat")
	m.Data = []byte(`{"body":"over long polling"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b.wait("the message over LongPoll", `window.fabricLog.some((e) => e.ev === "msg" && e.event === "chat" && e.payload?.body === "over long polling")`, 15*time.Second)
	b.screenshot(filepath.Join(arts, "phoenix-longpoll.png"))

	for _, e := range b.pageLog() {
		if e.Ev == "open" && e.Transport != "LongPoll" {
			t.Fatalf("socket opened over %s through a proxy that blocks WebSocket", e.Transport)
		}
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
	t.Logf("WebSocket attempts refused: %d, LongPoll requests: %d", wsTries.Load(), lpRequests.Load())
}
