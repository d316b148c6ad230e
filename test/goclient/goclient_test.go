// Package goclient tests the public Go client (clients/go, package phx)
// against a real Fabric: embedded NATS and JetStream, the gateway on
// loopback, a TCP proxy in between to cut, freeze or redirect connections,
// and a TLS terminator for wss.
package goclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
)

const wait = 15 * time.Second

type fabric struct {
	*app.App
	t  *testing.T
	nc *nats.Conn
}

// startFabric runs a Fabric on loopback ports with its own data dir;
// natsURL, when set, makes it a second gateway on another's NATS.
func startFabric(t *testing.T, natsURL string, mutate func(*app.Config)) *fabric {
	t.Helper()
	cfg := app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSListen: "127.0.0.1:0",
		NATSURL:    natsURL,
		DataDir:    t.TempDir(),
		LeaveGrace: 50 * time.Millisecond,
	}
	if natsURL != "" {
		cfg.NATSListen = ""
		cfg.DataDir = ""
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a := testkit.StartApp(t, cfg)
	nc := testkit.Connect(t, a.NATSURL())
	return &fabric{App: a, t: t, nc: nc}
}

// publish sends what a backend service would: a JSON body is a JSON
// message, anything else a binary one.
func (f *fabric) publish(subject, event string, body []byte) {
	f.t.Helper()
	m := nats.NewMsg(subject)
	m.Header.Set("Fabric-Event", event)
	m.Data = body
	if err := f.nc.PublishMsg(m); err != nil {
		f.t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fabric) interest(subject string) int {
	return f.Embedded().NATS().GlobalAccount().Interest(subject)
}

func dial(t *testing.T, endpoint string, opts phx.Options) *phx.Socket {
	t.Helper()
	if opts.Reconnect == (phx.Backoff{}) {
		opts.Reconnect = phx.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	if opts.Rejoin == (phx.Backoff{}) {
		opts.Rejoin = phx.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := phx.Dial(ctx, endpoint, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", endpoint, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func join(t *testing.T, s *phx.Socket, topic string, params any, opts ...phx.ChannelOption) *phx.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := s.Join(ctx, topic, params, opts...)
	if err != nil {
		t.Fatalf("join %s: %v", topic, err)
	}
	return ch
}

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects messages from the reader goroutine.
type recorder struct {
	mu   sync.Mutex
	msgs []phx.Message
	more chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) add(m phx.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// waitN returns the first n messages of event, failing after wait.
func (r *recorder) waitN(t *testing.T, event string, n int) []phx.Message {
	t.Helper()
	deadline := time.After(wait)
	for {
		r.mu.Lock()
		var got []phx.Message
		for _, m := range r.msgs {
			if m.Event == event {
				got = append(got, m)
			}
		}
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("got %d %q messages, want %d", len(got), event, n)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy forwards TCP to a target it can change, and can cut every
// connection, refuse new ones, or stall the live ones (bytes are read and
// dropped both ways, TCP stays up: a peer that died without TCP noticing).
type proxy struct {
	ln      net.Listener
	target  atomic.Value // string
	refuse  atomic.Bool
	accepts atomic.Int64
	mu      sync.Mutex
	conns   map[net.Conn]*atomic.Bool // both ends of each pair share the stall flag
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]*atomic.Bool{}}
	p.target.Store(target)
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepts.Add(1)
			if p.refuse.Load() {
				c.Close()
				continue
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.target.Load().(string))
	if err != nil {
		c.Close()
		return
	}
	stalled := new(atomic.Bool)
	p.mu.Lock()
	p.conns[c], p.conns[u] = stalled, stalled
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !stalled.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(u, c)
	go pipe(c, u)
}

// cut closes every live connection (the client sees a reset, no close frame).
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// stall silences the live connections; new ones flow.
func (p *proxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.conns {
		st.Store(true)
	}
}

func (p *proxy) endpoint() string { return "ws://" + p.ln.Addr().String() + "/socket" }

func endpoint(f *fabric) string { return "ws://" + f.HTTPAddr() + "/socket" }

// The basics on one channel of a persistent namespace: join reply with a
// position, JSON and binary broadcasts with their offsets, push with a
// reply, error replies, leave.
func TestJoinBroadcastPushLeave(t *testing.T) {
	f := startFabric(t, "", nil)
	s := dial(t, endpoint(f), phx.Options{})
	rec := newRecorder()
	ch := join(t, s, "room:a", map[string]any{"hello": 1}, phx.OnMessage(rec.add))
	start, ok := ch.Position()
	if !ok || start.Epoch == "" {
		t.Fatalf("no position after joining a persistent channel: %+v %v", start, ok)
	}
	if _, err := s.Join(ctxWait(t), "room:a", nil); !errors.Is(err, phx.ErrAlreadyJoined) {
		t.Fatalf("second join of the same topic: %v", err)
	}

	f.publish("fabric.room.a", "m", []byte(`{"i":0}`))
	m := rec.waitN(t, "m", 1)[0]
	if string(m.Payload) != `{"i":0}` || m.Binary != nil || m.Offset <= start.Offset || m.Topic != "room:a" {
		t.Fatalf("JSON broadcast: %+v (joined at %d)", m, start.Offset)
	}
	// Binary: the offset arrives in the fabric:offset frame after it and
	// is attached to the message.
	f.publish("fabric.room.a", "bin", []byte{0xff, 0, 1})
	b := rec.waitN(t, "bin", 1)[0]
	if string(b.Binary) != "\xff\x00\x01" || b.Payload != nil || b.Offset <= m.Offset {
		t.Fatalf("binary broadcast: %+v after offset %d", b, m.Offset)
	}
	if p, _ := ch.Position(); p.Offset != b.Offset || p.Epoch != start.Epoch {
		t.Fatalf("position %+v after binary at %d", p, b.Offset)
	}
	for _, m := range rec.msgs {
		if m.Event == "fabric:offset" {
			t.Fatal("fabric:offset reached the app")
		}
	}

	// Push: the reply carries the offset the message got; it comes back
	// as a broadcast with that offset.
	r, err := ch.Push(ctxWait(t), "new_msg", map[string]string{"body": "hi"})
	if err != nil || !r.OK() {
		t.Fatalf("push: %+v %v", r, err)
	}
	var ack struct {
		Offset json.Number `json:"offset"`
	}
	if err := json.Unmarshal(r.Response, &ack); err != nil || ack.Offset == "" {
		t.Fatalf("push reply %s: %v", r.Response, err)
	}
	echo := rec.waitN(t, "new_msg", 1)[0]
	if string(echo.Payload) != `{"body":"hi"}` || fmt.Sprint(echo.Offset) != ack.Offset.String() {
		t.Fatalf("pushed message came back as %+v, reply said offset %s", echo, ack.Offset)
	}
	r, err = ch.PushBinary(ctxWait(t), "blob", []byte{0xfe, 0xed})
	if err != nil || !r.OK() {
		t.Fatalf("binary push: %+v %v", r, err)
	}
	if got := rec.waitN(t, "blob", 1)[0]; string(got.Binary) != "\xfe\xed" || got.Offset == 0 {
		t.Fatalf("binary push came back as %+v", got)
	}
	// A push the gateway refuses: a reserved event name.
	var re *phx.ReplyError
	if r, err := ch.Push(ctxWait(t), "phx_nope", nil); !errors.As(err, &re) || r.Status != "error" || r.OK() {
		t.Fatalf("reserved event push: %+v %v", r, err)
	}
	// Payloads must be JSON objects.
	if _, err := ch.Push(ctxWait(t), "x", []int{1}); err == nil {
		t.Fatal("an array payload was sent")
	}
	// A refused join is a ReplyError and leaves nothing behind.
	if _, err := s.Join(ctxWait(t), "room::empty-segment", nil); !errors.As(err, &re) || re.Reply.Status != "error" {
		t.Fatalf("invalid topic join: %v", err)
	}
	// Ephemeral namespace: no position, no offsets.
	rec2 := newRecorder()
	eph := join(t, s, "chat:x", nil, phx.OnMessage(rec2.add))
	if _, ok := eph.Position(); ok {
		t.Fatal("ephemeral channel has a position")
	}
	f.publish("fabric.chat.x", "m", []byte(`{}`))
	if m := rec2.waitN(t, "m", 1)[0]; m.Offset != 0 {
		t.Fatalf("ephemeral message with offset %d", m.Offset)
	}

	// Leave: the gateway drops its subscription; the channel is closed.
	if err := ch.Leave(ctxWait(t)); err != nil {
		t.Fatalf("leave: %v", err)
	}
	eventually(t, "the gateway to unsubscribe room:a", func() bool { return f.interest("fabric_live.room.a") == 0 })
	if _, err := ch.Push(ctxWait(t), "x", nil); !errors.Is(err, phx.ErrChannelClosed) {
		t.Fatalf("push after leave: %v", err)
	}
	select {
	case <-ch.Done():
	default:
		t.Fatal("Done not closed after Leave")
	}
	// The topic can be joined again.
	join(t, s, "room:a", nil)
}

// A gateway shut down (close frame 1001) while messages keep coming: the
// client reconnects to another gateway, rejoins with its position and gets
// every message exactly once, in order, JSON and binary alike.
func TestReconnectResumesNothingLost(t *testing.T) {
	f1 := startFabric(t, "", nil)
	g2 := startFabric(t, f1.NATSURL(), nil)
	px := newProxy(t, g2.HTTPAddr())

	var disconnects atomic.Int64
	var lastErr atomic.Value
	s := dial(t, px.endpoint(), phx.Options{OnDisconnect: func(err error) {
		disconnects.Add(1)
		lastErr.Store(err)
	}})
	rec := newRecorder()
	resumes := make(chan phx.Resume, 4)
	join(t, s, "room:r", nil, phx.OnMessage(rec.add), phx.OnResume(func(r phx.Resume) { resumes <- r }))

	// Every third message binary.
	body := func(i int) []byte {
		if i%3 == 2 {
			return []byte{0xff, byte(i)}
		}
		return []byte(fmt.Sprintf(`{"i":%d}`, i))
	}
	for i := 0; i < 6; i++ {
		f1.publish("fabric.room.r", "m", body(i))
	}
	rec.waitN(t, "m", 6)

	px.target.Store(f1.HTTPAddr())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	g2.Shutdown(ctx)
	cancel()
	for i := 6; i < 30; i++ {
		f1.publish("fabric.room.r", "m", body(i))
	}
	select {
	case r := <-resumes:
		if !r.Recovered || r.From.Epoch == "" {
			t.Fatalf("resume: %+v", r)
		}
	case <-time.After(wait):
		t.Fatal("no resume after the gateway went away")
	}
	var ce *phx.CloseError
	if err, _ := lastErr.Load().(error); !errors.As(err, &ce) || ce.Code != 1001 {
		t.Fatalf("disconnect reason %v, want a 1001 close frame", err)
	}
	for i := 30; i < 35; i++ {
		f1.publish("fabric.room.r", "m", body(i))
	}
	got := rec.waitN(t, "m", 35)
	var prev uint64
	for i, m := range got {
		want := body(i)
		have := []byte(m.Payload)
		if m.Binary != nil {
			have = m.Binary
		}
		if string(have) != string(want) || m.Offset <= prev {
			t.Fatalf("message %d: %q at offset %d (previous %d), want %q", i, have, m.Offset, prev, want)
		}
		prev = m.Offset
	}
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	if n := len(rec.waitN(t, "m", 35)); n != 35 {
		t.Fatalf("%d messages, want 35: duplicates", n)
	}
	if disconnects.Load() != 1 {
		t.Fatalf("%d disconnects", disconnects.Load())
	}
}

// History gone while the client was away: the rejoin reports the gap with
// its reason, and the channel continues live from the position given.
func TestResumeReportsGap(t *testing.T) {
	f := startFabric(t, "", func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"room": {History: true, MaxMsgsPerChannel: 10}}
	})
	px := newProxy(t, f.HTTPAddr())
	s := dial(t, px.endpoint(), phx.Options{})
	rec := newRecorder()
	resumes := make(chan phx.Resume, 4)
	ch := join(t, s, "room:g", nil, phx.OnMessage(rec.add), phx.OnResume(func(r phx.Resume) { resumes <- r }))
	f.publish("fabric.room.g", "m", []byte(`{"i":0}`))
	first := rec.waitN(t, "m", 1)[0]

	px.refuse.Store(true)
	px.cut()
	eventually(t, "the client to notice", func() bool { return !s.Connected() })
	// Once the gateway forgot the channel (leave grace), only the stream
	// could serve a resume, and it keeps 10 messages.
	eventually(t, "the gateway to drop room:g", func() bool { return f.interest("fabric_live.room.g") == 0 })
	for i := 1; i <= 30; i++ {
		f.publish("fabric.room.g", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	px.refuse.Store(false)
	var r phx.Resume
	select {
	case r = <-resumes:
	case <-time.After(wait):
		t.Fatal("no resume outcome")
	}
	if r.Recovered || r.Reason != "history_gone" || r.From.Offset != first.Offset || r.To.Offset <= first.Offset+20 {
		t.Fatalf("resume after retention dropped messages: %+v (last seen %d)", r, first.Offset)
	}
	if p, _ := ch.Position(); p != r.To {
		t.Fatalf("position %+v, resume said %+v", p, r.To)
	}
	f.publish("fabric.room.g", "m", []byte(`{"i":31}`))
	got := rec.waitN(t, "m", 2)
	if len(got) != 2 || string(got[1].Payload) != `{"i":31}` || got[1].Offset <= r.To.Offset {
		t.Fatalf("after the gap: %+v", got)
	}
}

// A connection that stops answering (TCP still up) is found by the
// heartbeat and replaced; the channel rejoins.
func TestHeartbeatTimeoutReconnects(t *testing.T) {
	f := startFabric(t, "", nil)
	px := newProxy(t, f.HTTPAddr())
	var disconnects atomic.Int64
	s := dial(t, px.endpoint(), phx.Options{
		HeartbeatInterval: 100 * time.Millisecond,
		OnDisconnect:      func(error) { disconnects.Add(1) },
	})
	rec := newRecorder()
	ch := join(t, s, "room:hb", nil, phx.OnMessage(rec.add))
	// Heartbeats keep a healthy connection up.
	time.Sleep(500 * time.Millisecond)
	if disconnects.Load() != 0 || px.accepts.Load() != 1 {
		t.Fatalf("healthy connection: %d disconnects, %d connections", disconnects.Load(), px.accepts.Load())
	}
	px.stall()
	eventually(t, "the heartbeat timeout", func() bool { return disconnects.Load() == 1 })
	eventually(t, "the rejoin", func() bool { return ch.Joined() && px.accepts.Load() >= 2 })
	f.publish("fabric.room.hb", "m", []byte(`{}`))
	rec.waitN(t, "m", 1)
}

// Presence: each client sees the other join and leave, like phoenix.js's
// Presence class.
func TestPresence(t *testing.T) {
	f := startFabric(t, "", func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"room": {History: true, Presence: true}}
	})
	keys := func(p *phx.Presence) string {
		var ks []string
		for _, e := range p.List() {
			ks = append(ks, e.Key)
		}
		return fmt.Sprint(ks)
	}
	pa, pb := phx.NewPresence(), phx.NewPresence()
	var left sync.Map
	pa.OnLeave = func(key string, remaining, _ []phx.Meta) {
		if len(remaining) == 0 {
			left.Store(key, true)
		}
	}
	px := newProxy(t, f.HTTPAddr())
	a := dial(t, px.endpoint(), phx.Options{})
	b := dial(t, endpoint(f), phx.Options{})
	join(t, a, "room:p", map[string]any{"user": "alice", "meta": map[string]string{"status": "away"}}, phx.WithPresence(pa))
	chb := join(t, b, "room:p", map[string]any{"user": "bob"}, phx.WithPresence(pb))
	eventually(t, "alice to see bob", func() bool { return keys(pa) == "[alice bob]" })
	eventually(t, "bob to see alice", func() bool { return keys(pb) == "[alice bob]" })
	var meta struct {
		Status string `json:"status"`
	}
	if ms := pb.Get("alice"); len(ms) != 1 || ms[0].PhxRef == "" || ms[0].Decode(&meta) != nil || meta.Status != "away" {
		t.Fatalf("alice's metas seen by bob: %+v", ms)
	}
	if err := chb.Leave(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice to see bob leave", func() bool { _, ok := left.Load("bob"); return ok && keys(pa) == "[alice]" })

	// Carol comes and goes while alice is disconnected: alice's rejoin
	// gets a fresh state, and carol's arrival and departure in between
	// leave no trace; dave, who stays, is there.
	px.refuse.Store(true)
	px.cut()
	eventually(t, "alice to notice the cut", func() bool { return !a.Connected() })
	c := dial(t, endpoint(f), phx.Options{})
	chc := join(t, c, "room:p", map[string]any{"user": "carol"})
	join(t, dial(t, endpoint(f), phx.Options{}), "room:p", map[string]any{"user": "dave"})
	if err := chc.Leave(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	px.refuse.Store(false)
	eventually(t, "alice to see dave after her rejoin", func() bool { return keys(pa) == "[alice dave]" })
	if _, ok := left.Load("carol"); ok {
		t.Fatal("carol, never seen, reported as leaving")
	}
}

// wss with a custom tls.Config (a private CA), and a refusal without it.
func TestTLS(t *testing.T) {
	f := startFabric(t, "", nil)
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				u, err := net.Dial("tcp", f.HTTPAddr())
				if err != nil {
					c.Close()
					return
				}
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
				c.Close()
			}()
		}
	}()
	wss := "wss://" + ln.Addr().String() + "/socket"
	if _, err := phx.Dial(ctxWait(t), wss, phx.Options{}); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
	s := dial(t, wss, phx.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	rec := newRecorder()
	join(t, s, "room:tls", nil, phx.OnMessage(rec.add))
	f.publish("fabric.room.tls", "m", []byte(`{"secure":true}`))
	if m := rec.waitN(t, "m", 1)[0]; string(m.Payload) != `{"secure":true}` {
		t.Fatalf("over wss: %+v", m)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fabric test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Tokens: in the query (re-read on every reconnect through ParamsFunc) or
// as the phoenix.js authToken subprotocol; a bad one is an HTTP refusal.
func TestAuth(t *testing.T) {
	const secret = "an-hs256-test-secret-of-32-bytes!"
	f := startFabric(t, "", func(c *app.Config) {
		c.JWTSecret = secret
		c.AllowQueryToken = true
	})
	mint := func() string {
		tok, err := auth.Mint(auth.Config{Secret: []byte(secret)}, auth.MintClaims{Subject: "u1", Channels: []string{"room:*"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var he *phx.HandshakeError
	if _, err := phx.Dial(ctxWait(t), endpoint(f), phx.Options{Params: url.Values{"token": {"nope"}}}); !errors.As(err, &he) || he.Status < 400 {
		t.Fatalf("bad token: %v", err)
	}
	join(t, dial(t, endpoint(f), phx.Options{AuthToken: mint()}), "room:x", nil)

	px := newProxy(t, f.HTTPAddr())
	var calls atomic.Int64
	s := dial(t, px.endpoint(), phx.Options{ParamsFunc: func() url.Values {
		calls.Add(1)
		return url.Values{"token": {mint()}}
	}})
	ch := join(t, s, "room:x", nil)
	var re *phx.ReplyError
	if _, err := s.Join(ctxWait(t), "chat:forbidden", nil); !errors.As(err, &re) {
		t.Fatalf("join outside the token's channels: %v", err)
	}
	px.cut()
	eventually(t, "rejoin with a fresh token", func() bool { return calls.Load() >= 2 && ch.Joined() })
}

// Many goroutines push on several channels while the connection is cut
// again and again: every push returns (a reply, or ErrDisconnected when
// the connection dropped first), every acknowledged push comes back
// exactly once on its channel (resume fills what the cuts interrupted),
// and no message is delivered twice.
func TestConcurrentPushesAcrossCuts(t *testing.T) {
	f := startFabric(t, "", nil)
	px := newProxy(t, f.HTTPAddr())
	s := dial(t, px.endpoint(), phx.Options{
		OnDisconnect: func(err error) { t.Logf("disconnected: %v", err) },
		OnError:      func(err error) { t.Logf("client error: %v", err) },
	})
	const nch, workers, each = 4, 8, 25
	chans := make([]*phx.Channel, nch)
	recs := make([]*recorder, nch)
	for i := range chans {
		recs[i] = newRecorder()
		chans[i] = join(t, s, fmt.Sprintf("room:c%d", i), nil, phx.On("p", recs[i].add))
	}
	type sent struct {
		ch  int
		id  string
		ack bool
	}
	results := make(chan sent, workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < each; k++ {
				ci := (w + k) % nch
				id := fmt.Sprintf("%d-%d", w, k)
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				r, err := chans[ci].Push(ctx, "p", map[string]string{"id": id})
				cancel()
				switch {
				case err == nil && r.OK():
					results <- sent{ci, id, true}
				case errors.Is(err, phx.ErrDisconnected):
					results <- sent{ci, id, false}
				default:
					t.Errorf("push %s: %+v %v", id, r, err)
					results <- sent{ci, id, false}
				}
			}
		}()
	}
	allJoined := func() bool {
		for _, ch := range chans {
			if !ch.Joined() {
				return false
			}
		}
		return true
	}
	cuts := make(chan struct{})
	go func() {
		defer close(cuts)
		for i := 0; i < 3; i++ {
			time.Sleep(80 * time.Millisecond)
			// Cut a live connection each time: wait for the reconnect.
			for deadline := time.Now().Add(wait); px.accepts.Load() != int64(i+1) || !allJoined(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("cut %d: no reconnect", i)
					return
				}
			}
			px.cut()
		}
	}()
	wg.Wait()
	<-cuts
	close(results)
	var acked []sent
	for r := range results {
		if r.ack {
			acked = append(acked, r)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no push was acknowledged")
	}
	// After the last cut is noticed and every channel rejoined, a marker
	// pushed on every channel: once it is back, everything before it has
	// been delivered.
	eventually(t, "the reconnect after the last cut", func() bool { return px.accepts.Load() == 4 && allJoined() })
	for i, ch := range chans {
		if _, err := ch.Push(ctxWait(t), "p", map[string]string{"id": "end"}); err != nil {
			t.Fatalf("final push on channel %d: %v", i, err)
		}
	}
	for i, rec := range recs {
		eventually(t, fmt.Sprintf("channel %d's marker", i), func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, m := range rec.msgs {
				if string(m.Payload) == `{"id":"end"}` {
					return true
				}
			}
			return false
		})
	}
	seen := make([]map[string]int, nch)
	for i, rec := range recs {
		seen[i] = map[string]int{}
		rec.mu.Lock()
		for _, m := range rec.msgs {
			var p struct{ ID string }
			json.Unmarshal(m.Payload, &p)
			seen[i][p.ID]++
			if seen[i][p.ID] > 1 {
				t.Errorf("channel %d got %s twice", i, p.ID)
			}
		}
		rec.mu.Unlock()
	}
	for _, a := range acked {
		if seen[a.ch][a.id] != 1 {
			t.Errorf("acknowledged push %s on channel %d delivered %d times", a.id, a.ch, seen[a.ch][a.id])
		}
	}
	t.Logf("%d of %d pushes acknowledged across %d connections", len(acked), workers*each, px.accepts.Load())
}
