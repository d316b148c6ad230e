package attack

// Finding 1 of issue 21: with JWT on, the embedded NATS and the ops port
// were reachable from the network without any credential. These tests
// bind to 0.0.0.0 (a free port; nothing outside connects) because every
// 127.x address is loopback and would pass the check.

import (
	"context"
	"errors"
	"github.com/fabric-rt/fabric/internal/testkit"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

const natsOpenSecret = "natsopen-hs256-test-secret-32-bytes!"

// natsOpenConfig is an authenticated gateway on loopback except what a
// test moves off it.
func natsOpenConfig(t *testing.T) app.Config {
	return app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "127.0.0.1:0",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		JWTSecret:  natsOpenSecret,
		LeaveGrace: 50 * time.Millisecond,
	}
}

func natsOpenStart(t *testing.T, cfg app.Config) *app.App {
	t.Helper()
	a := testkit.StartApp(t, cfg)
	return a
}

// With a JWT key configured, every listener that would expose NATS or the
// ops port to the network without authentication stops the start, and the
// error names the flag that fixes it. Nothing is left listening.
func TestNATSOpenRefusesToStart(t *testing.T) {
	noAuth := natsOpenConf(t, "max_payload: 1MB\n")
	usersNoRoutes := natsOpenConf(t, "authorization { users: [{user: fabric, password: pw}] }\n")
	cases := []struct {
		name   string
		mutate func(*app.Config)
		want   string
	}{
		{"nats client port", func(c *app.Config) { c.NATSListen = "0.0.0.0:0" }, "--nats-config"},
		{"nats client port, config without users", func(c *app.Config) {
			c.NATSListen = "0.0.0.0:0"
			c.NATSConfig = noAuth
		}, "--nats-listen"},
		{"cluster routes", func(c *app.Config) {
			c.NATSConfig, c.NATSUser, c.NATSPassword = usersNoRoutes, "fabric", "pw"
			c.ClusterName, c.ClusterListen = "c", "0.0.0.0:0"
		}, "cluster { authorization"},
		{"ops port", func(c *app.Config) { c.OpsListen = "0.0.0.0:0" }, "--allow-remote-ops"},
		{"leaf nodes from the config file", func(c *app.Config) {
			c.NATSConfig = natsOpenConf(t, "leafnodes { listen: \"0.0.0.0:-1\" }\n")
		}, "leafnodes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := natsOpenConfig(t)
			// A fixed free port for the client listener: after the refusal
			// it must still be free (nothing was opened).
			cfg.Listen = proctest.FreeAddrOn(t, "127.0.0.1")
			tc.mutate(&cfg)
			a, err := app.Start(cfg)
			if err == nil {
				a.Shutdown(context.Background())
				t.Fatal("started")
			}
			if !errors.Is(err, app.ErrOpenOnNetwork) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrOpenOnNetwork naming %q", err, tc.want)
			}
			l, lerr := net.Listen("tcp", cfg.Listen)
			if lerr != nil {
				t.Fatalf("client address still taken after the refusal: %v", lerr)
			}
			l.Close()
		})
	}
}

func natsOpenConf(t *testing.T, body string) string {
	t.Helper()
	p := t.TempDir() + "/nats.conf"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// natsOpenPasswords sets the variables examples/nats-auth/nats.conf reads.
func natsOpenPasswords(t *testing.T) map[string]string {
	pw := map[string]string{
		"fabric":    "gw-" + strings.Repeat("x", 20),
		"chat":      "chat-" + strings.Repeat("y", 20),
		"analytics": "an-" + strings.Repeat("z", 20),
	}
	t.Setenv("FABRIC_NATS_PASSWORD", pw["fabric"])
	t.Setenv("CHAT_NATS_PASSWORD", pw["chat"])
	t.Setenv("ANALYTICS_NATS_PASSWORD", pw["analytics"])
	return pw
}

// With the documented example config, the client port on 0.0.0.0 starts;
// the gateway logs in with its own user and works end to end (a client with
// a JWT joins, a service publishes with the publisher library and answers
// a routed push); a connection without or with wrong credentials is
// refused; the service cannot step outside its namespace nor delete the
// stream; the analytics user can neither publish nor serve pushes.
func TestNATSAuthExampleEndToEnd(t *testing.T) {
	pw := natsOpenPasswords(t)
	cfg := natsOpenConfig(t)
	_, port, _ := net.SplitHostPort(proctest.FreeAddrOn(t, "0.0.0.0"))
	cfg.NATSListen = "0.0.0.0:" + port
	cfg.NATSConfig = "../../examples/nats-auth/nats.conf"
	cfg.NATSUser, cfg.NATSPassword = "fabric", pw["fabric"]
	cfg.AllowQueryToken = true
	cfg.Namespaces = map[string]namespace.Namespace{
		"room": {History: true, MaxAge: time.Hour, Pushes: namespace.PushesRequest, PushTimeout: 3 * time.Second},
	}
	a := natsOpenStart(t, cfg)
	url := "nats://127.0.0.1:" + port

	// No credentials, a wrong password, an unknown user: refused.
	for _, opts := range [][]nats.Option{
		nil,
		{nats.UserInfo("chat", "wrong")},
		{nats.UserInfo("mallory", pw["chat"])},
	} {
		nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0), nats.Timeout(5*time.Second))...)
		if err == nil {
			nc.Close()
			t.Fatalf("connected with %d options: want an authorization error", len(opts))
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("connect: %v, want an authorization violation", err)
		}
	}

	violations := make(chan error, 16)
	connect := func(user, inbox string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(url, nats.UserInfo(user, pw[user]), nats.CustomInboxPrefix(inbox),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case violations <- err:
				default:
				}
			}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	// The chat service answers routed pushes of room:*.
	chat := connect("chat", "_INBOX_chat")
	if _, err := chat.Subscribe("fabric_in.room.>", func(m *nats.Msg) {
		m.Respond([]byte(`{"served_by":"chat"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := chat.Flush(); err != nil {
		t.Fatal(err)
	}

	// A client with a token joins and pushes; the service answers.
	tok, err := auth.Mint(auth.Config{Secret: []byte(natsOpenSecret)}, auth.MintClaims{
		Subject: "alice", Channels: []string{"room:*"}, Publish: []string{"room:*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := phxclient.Dial(ctx, "ws://"+a.HTTPAddr()+"/socket/websocket?vsn=2.0.0&token="+tok, phoenix.V2, phxclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	joinRef, err := c.Join("room:lobby", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if status, resp, err := c.WaitReply(joinRef, 10*time.Second); err != nil || status != "ok" {
		t.Fatalf("join: %s %s %v", status, resp, err)
	}
	ref := c.NextRef()
	if err := c.Send(phoenix.R(joinRef), phoenix.R(ref), "room:lobby", "move", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	if status, resp, err := c.WaitReply(ref, 10*time.Second); err != nil || status != "ok" || !strings.Contains(string(resp), `"served_by":"chat"`) {
		t.Fatalf("routed push: %s %s %v", status, resp, err)
	}

	// The service publishes with history (JetStream ack) and the client
	// receives it.
	pub, err := publisher.New(chat, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	res, err := pub.Publish(ctx, "room:lobby", "news", []byte(`{"body":"from chat"}`))
	if err != nil || res.Offset == 0 {
		t.Fatalf("service publish: %+v %v", res, err)
	}
	if m, err := c.NextMatch(10*time.Second, func(m phxclient.Msg) bool { return m.Event == "news" }); err != nil ||
		!strings.Contains(string(m.Payload), "from chat") {
		t.Fatalf("client did not receive the service's message: %+v %v", m, err)
	}

	// Outside its namespace, and on the stream API, the service is refused.
	// game:* is ephemeral: a core publish, refused by the server
	// asynchronously.
	pub.Publish(ctx, "game:1", "news", []byte(`{}`))
	natsOpenViolation(t, violations, "fabric.game.1")
	js, err := jetstream.New(chat)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	derr := js.DeleteStream(dctx, wire.StreamName("room"))
	dcancel()
	if derr == nil {
		t.Fatal("chat deleted the room stream")
	}
	natsOpenViolation(t, violations, "$JS.API.STREAM.DELETE")

	// The analytics user can neither publish to a channel nor take the
	// routed pushes.
	an := connect("analytics", "_INBOX_analytics")
	if err := an.Publish("fabric.room.lobby", []byte(`{"forged":true}`)); err != nil {
		t.Fatal(err)
	}
	an.Flush()
	natsOpenViolation(t, violations, "fabric.room.lobby")
	if _, err := an.Subscribe("fabric_in.room.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	an.Flush()
	natsOpenViolation(t, violations, "fabric_in.room.>")
	if m, err := c.NextMatch(500*time.Millisecond, func(m phxclient.Msg) bool {
		return strings.Contains(string(m.Payload), "forged")
	}); err == nil {
		t.Fatalf("analytics' forged publish reached the client: %+v", m)
	}
}

// docs/security.md shows the example config the test above runs, verbatim.
func TestSecurityDocShowsTheTestedExample(t *testing.T) {
	conf, err := os.ReadFile("../../examples/nats-auth/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```\n"+string(conf)+"```\n") {
		t.Fatal("docs/security.md does not contain examples/nats-auth/nats.conf as a code block: copy the file into the document")
	}
}

func natsOpenViolation(t *testing.T, ch <-chan error, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-ch:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s", subject)
		}
	}
}

// pprof is served only with --pprof, and never /debug/pprof/cmdline, which
// would show secrets passed as flags.
func TestPprofOnlyWhenAsked(t *testing.T) {
	get := func(a *app.App, path string) int {
		t.Helper()
		resp, err := http.Get("http://" + a.OpsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	off := natsOpenStart(t, natsOpenConfig(t))
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"} {
		if code := get(off, p); code != http.StatusNotFound {
			t.Errorf("without Pprof: %s = %d, want 404", p, code)
		}
	}
	if code := get(off, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics = %d", code)
	}
	cfg := natsOpenConfig(t)
	cfg.Pprof = true
	on := natsOpenStart(t, cfg)
	if code := get(on, "/debug/pprof/heap"); code != http.StatusOK {
		t.Errorf("with Pprof: heap = %d, want 200", code)
	}
	if code := get(on, "/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("with Pprof: cmdline = %d, want 404", code)
	}
}
