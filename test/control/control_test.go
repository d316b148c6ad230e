// Package control holds end-to-end tests of cluster-wide control
// (nats/natsctl behind control.Cluster): gateways sharing one NATS, the
// real phoenix.js client on each, and the operations a backend calls —
// presence, channels, disconnect with a ban, unsubscribe, revoke.
package control

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	ctl "github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

const (
	secret = "control-test-secret-0123456789abcdef"
	wait   = 10 * time.Second
)

func start(t *testing.T, natsURL string) *app.App {
	t.Helper()
	cfg := app.Config{
		Listen:          "127.0.0.1:0",
		OpsListen:       "off",
		NATSListen:      "127.0.0.1:0",
		DataDir:         t.TempDir(),
		NATSURL:         natsURL,
		JWTSecret:       secret,
		AllowQueryToken: true,
		LeaveGrace:      50 * time.Millisecond,
		Namespaces: map[string]namespace.Namespace{
			"room": {History: true, MaxAge: time.Hour, Presence: true, PresenceTTL: 2 * time.Second},
			"chat": {},
		},
	}
	return testkit.StartApp(t, cfg)
}

func mint(t *testing.T, sub string) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(secret)}, auth.MintClaims{Subject: sub, Channels: []string{"room:*", "chat:*"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jti reads a minted token's id.
func jti(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		JTI string `json:"jti"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.JTI == "" {
		t.Fatalf("no jti in %s: %v", b, err)
	}
	return c.JTI
}

// client is a phoenix.js socket on a gateway, guarded (phoenix-resume.js
// guardSocket: "server_close" and "refused" events), reconnecting fast.
func client(t *testing.T, a *app.App, token string) *phxnode.Puppet {
	t.Helper()
	return clientOpts(t, a, token, nil)
}

func clientOpts(t *testing.T, a *app.App, token string, extra map[string]any) *phxnode.Puppet {
	t.Helper()
	p := phxnode.Start(t)
	opts := map[string]any{"reconnectAfterMs": 200}
	for k, v := range extra {
		opts[k] = v
	}
	if err := p.Connect(fmt.Sprintf("ws://%s/socket", a.HTTPAddr()), map[string]any{"token": token}, opts); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := p.Do(map[string]any{"cmd": "guard"}); err != nil {
		t.Fatalf("guard: %v", err)
	}
	p.Drain(phxnode.IsEv("open")) // tests wait for the next one
	return p
}

func join(t *testing.T, p *phxnode.Puppet, topic, name string) {
	t.Helper()
	if st, resp := p.Join(topic, map[string]any{"meta": map[string]any{"name": name}}); st != "ok" {
		t.Fatalf("join %s: %s %s", topic, st, resp)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// covered fails unless exactly the given gateways answered.
func covered(t *testing.T, what string, c ctl.Coverage, gws ...*app.App) {
	t.Helper()
	var want []string
	for _, g := range gws {
		want = append(want, g.Gateway().ID())
	}
	slices.Sort(want)
	if !slices.Equal(c.Answered, want) || len(c.Missing) != 0 {
		t.Fatalf("%s: answered %v, missing %v; want answered %v", what, c.Answered, c.Missing, want)
	}
}

func TestPresenceAndChannelsCountBothGateways(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())
	alice1 := client(t, g1, mint(t, "alice"))
	alice2 := client(t, g2, mint(t, "alice"))
	bob := client(t, g2, mint(t, "bob"))
	for _, p := range []*phxnode.Puppet{alice1, alice2, bob} {
		join(t, p, "room:lobby", "x")
		join(t, p, "chat:x", "x") // no presence in this namespace: counted by user
	}
	join(t, bob, "room:other", "b")

	cl := g1.Cluster()
	pr, err := cl.Presence(ctx(t), "room:lobby")
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "presence", pr.Coverage, g1, g2)
	if len(pr.Entries) != 2 || pr.Entries[0].Key != "alice" || len(pr.Entries[0].Metas) != 2 || pr.Entries[1].Key != "bob" || len(pr.Entries[1].Metas) != 1 {
		t.Fatalf("presence: %+v", pr.Entries)
	}
	var m map[string]any
	if err := json.Unmarshal(pr.Entries[0].Metas[0], &m); err != nil || m["phx_ref"] == nil {
		t.Fatalf("a presence meta as phoenix.js sees it (phx_ref…): %s", pr.Entries[0].Metas[0])
	}
	for _, topic := range []string{"room:lobby", "chat:x"} {
		st, err := g2.Cluster().PresenceStats(ctx(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		covered(t, "stats", st.Coverage, g1, g2)
		if st.Members != 2 || st.Connections != 3 {
			t.Fatalf("%s stats: %d members, %d connections; want 2, 3", topic, st.Members, st.Connections)
		}
	}
	chs, err := cl.Channels(ctx(t), "room:*")
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "channels", chs.Coverage, g1, g2)
	want := []ctl.ChannelInfo{{Topic: "room:lobby", Members: 3}, {Topic: "room:other", Members: 1}}
	if !slices.Equal(chs.Channels, want) {
		t.Fatalf("channels room:*: %+v, want %+v", chs.Channels, want)
	}
	info, err := cl.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "info", info.Coverage, g1, g2)
	conns := 0
	for _, g := range info.Gateways {
		conns += g.Connections
	}
	if len(info.Gateways) != 2 || conns != 3 || !info.NATS.JetStream {
		t.Fatalf("info: %+v", info)
	}
}

// closed waits for p's socket close and returns it.
func closed(t *testing.T, p *phxnode.Puppet, code int) phxnode.Event {
	t.Helper()
	e, ok := p.Next(wait, phxnode.IsEv("close"))
	if !ok {
		t.Fatalf("no close within %v\n%v", wait, p.Buffered())
	}
	if e.Code != code {
		t.Fatalf("closed with %d %q, want %d", e.Code, e.Reason, code)
	}
	return e
}

func TestDisconnectWithBanClosesEverywhereAndRefusesUntilTheBanEnds(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())
	tok := mint(t, "mallory")
	m1 := client(t, g1, tok)
	m2 := client(t, g2, tok)
	lp := clientOpts(t, g1, tok, map[string]any{"longpoll": true})
	bob := client(t, g2, mint(t, "bob"))
	join(t, m1, "room:a", "m")
	join(t, m2, "room:a", "m")
	join(t, lp, "room:a", "m")

	const ban = 4 * time.Second
	began := time.Now()
	res, err := g1.Cluster().Disconnect(ctx(t), ctl.DisconnectRequest{User: "mallory", Ban: ban, Reason: "cheating"})
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "disconnect", res.Coverage, g1, g2)
	if res.Count != 3 {
		t.Fatalf("disconnect closed %d connections, want 3 (two WebSocket, one LongPoll)", res.Count)
	}
	for i, p := range []*phxnode.Puppet{m1, m2} {
		e := closed(t, p, 4011)
		if e.Reason != "cheating" {
			t.Fatalf("close reason %q", e.Reason)
		}
		t.Logf("gateway %d: socket closed %v after the Disconnect call began", i+1, time.Since(began).Round(time.Millisecond))
	}
	for _, p := range []*phxnode.Puppet{m1, m2} {
		sc := p.MustNext(wait, "server_close", phxnode.IsEv("server_close"))
		if sc.Code != 4011 || sc.Reason != "cheating" {
			t.Fatalf("guardSocket saw %s", sc)
		}
	}
	// phoenix.js reconnects (every 200 ms here): refused before the
	// upgrade (LongPoll: its next session), and guardSocket learns why.
	for _, p := range []*phxnode.Puppet{m1, m2, lp} {
		r := p.MustNext(wait, "refused", phxnode.IsEv("refused"))
		var status, retry float64
		_ = r.Field("status", &status)
		_ = r.Field("retryAfter", &retry)
		if status != 403 || r.Reason != "banned" || retry < 1 || retry > ban.Seconds()+1 {
			t.Fatalf("refusal during the ban: %s", r)
		}
	}
	// A gateway started during the ban refuses it too (the ban is in NATS).
	g3 := start(t, g1.NATSURL())
	late := phxnode.Start(t)
	if err := late.Connect(fmt.Sprintf("ws://%s/socket", g3.HTTPAddr()), map[string]any{"token": tok}, map[string]any{"reconnectAfterMs": 200}); err == nil && time.Since(began) < ban {
		t.Fatal("a new gateway admitted a banned user")
	}
	// After the ban the same token is admitted again.
	for _, p := range []*phxnode.Puppet{m1, m2, lp} {
		e := p.MustNext(ban+wait, "reopen after the ban", phxnode.IsEv("open"))
		if d := time.Since(began); d < ban {
			t.Fatalf("reconnected %v after a %v ban began: %s", d, ban, e)
		}
	}
	if e, ok := bob.Next(0, phxnode.IsEv("close")); ok {
		t.Fatalf("bob's socket closed too: %s", e)
	}
}

func TestUnsubscribeSendsPhxCloseOnBothGateways(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())
	a1 := client(t, g1, mint(t, "alice"))
	a2 := client(t, g2, mint(t, "alice"))
	bob := client(t, g1, mint(t, "bob"))
	for _, p := range []*phxnode.Puppet{a1, a2, bob} {
		join(t, p, "room:u", "x")
		join(t, p, "room:keep", "x")
	}
	res, err := g2.Cluster().Unsubscribe(ctx(t), ctl.UnsubscribeRequest{User: "alice", Topic: "room:u"})
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "unsubscribe", res.Coverage, g1, g2)
	if res.Count != 2 {
		t.Fatalf("unsubscribed %d instances, want 2", res.Count)
	}
	for _, p := range []*phxnode.Puppet{a1, a2} {
		p.MustNext(wait, "phx_close", phxnode.IsMsg("room:u", "phx_close"))
		p.MustNext(wait, "chan_close", phxnode.OnTopic("chan_close", "room:u"))
		if st := p.State(); st.Channels["room:u"] != "closed" || st.Channels["room:keep"] != "joined" || !st.Connected {
			t.Fatalf("after unsubscribe: %+v", st)
		}
	}
	st, err := g1.Cluster().PresenceStats(ctx(t), "room:u")
	if err != nil || st.Members != 1 {
		t.Fatalf("room:u after unsubscribe: %+v %v (want bob only)", st, err)
	}
	if e, ok := bob.Next(0, phxnode.IsMsg("room:u", "phx_close")); ok {
		t.Fatalf("bob was unsubscribed too: %s", e)
	}
}

func TestRevokeClosesHoldersAndRefusesEverywhereLater(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())
	leaked := mint(t, "alice")
	other := mint(t, "alice") // alice's other token: not revoked by jti
	h1 := client(t, g1, leaked)
	h2 := client(t, g2, leaked)
	fine := client(t, g2, other)

	began := time.Now()
	res, err := g1.Cluster().Revoke(ctx(t), ctl.RevokeRequest{JTI: jti(t, leaked)})
	if err != nil {
		t.Fatal(err)
	}
	covered(t, "revoke", res.Coverage, g1, g2)
	if res.Count != 2 {
		t.Fatalf("revoke closed %d connections, want 2", res.Count)
	}
	for i, p := range []*phxnode.Puppet{h1, h2} {
		closed(t, p, 4012)
		t.Logf("gateway %d: holder closed %v after Revoke began", i+1, time.Since(began).Round(time.Millisecond))
	}
	for _, p := range []*phxnode.Puppet{h1, h2} {
		r := p.MustNext(wait, "refused", phxnode.IsEv("refused"))
		var status float64
		_ = r.Field("status", &status)
		if status != 401 || r.Reason != "token_revoked" {
			t.Fatalf("reconnect with the revoked token: %s", r)
		}
	}
	if e, ok := fine.Next(0, phxnode.IsEv("close")); ok {
		t.Fatalf("a connection with another token closed: %s", e)
	}
	// A third gateway started afterwards reads the list from NATS.
	g3 := start(t, g1.NATSURL())
	p := phxnode.Start(t)
	if err := p.Connect(fmt.Sprintf("ws://%s/socket", g3.HTTPAddr()), map[string]any{"token": leaked}, nil); err == nil {
		t.Fatal("a gateway started after the revocation admitted the token")
	}
	client(t, g3, other) // fails the test unless admitted
}

func TestRevokeUserBeforeRefusesItsResume(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())
	old := mint(t, "carol")
	c := client(t, g2, old)
	if r := c.JoinOpts("room:r", nil, map[string]any{"resumable": true}); r.Status != "ok" {
		t.Fatalf("join: %s %s", r.Status, r.Response)
	}
	c.Drain(phxnode.OnTopic("join_reply", "room:r")) // the first join's
	time.Sleep(1100 * time.Millisecond)              // iat has whole seconds: the cut-off falls after old's
	cut := time.Now()
	res, err := g1.Cluster().Revoke(ctx(t), ctl.RevokeRequest{User: "carol", IssuedBefore: cut, Until: cut.Add(time.Hour)})
	if err != nil || res.Count != 1 {
		t.Fatalf("revoke carol before %v: %+v %v", cut, res, err)
	}
	closed(t, c, 4012)
	// phoenix.js retries with its (revoked) token and would rejoin with
	// its offset: refused before the upgrade, so no resume.
	r := c.MustNext(wait, "refused", phxnode.IsEv("refused"))
	if r.Reason != "token_revoked" {
		t.Fatalf("refusal: %s", r)
	}
	if e, ok := c.Next(time.Second, phxnode.IsEv("open")); ok {
		t.Fatalf("reopened with a revoked token: %s", e)
	}
	if e, ok := c.Next(0, phxnode.OnTopic("join_reply", "room:r")); ok {
		t.Fatalf("rejoined with a revoked token: %s", e)
	}
	// A token issued after the cut-off is fine, on either gateway.
	time.Sleep(time.Until(cut.Truncate(time.Second).Add(time.Second)))
	client(t, g1, mint(t, "carol"))
}
