package control

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	ctl "github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/publisher/serverapi"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

const (
	keyBackend = "backend-key-0123456789abcdef" // presence on room:*, admin
	keyWatcher = "watcher-key-0123456789abcdef" // presence on room:* only
)

// startWithKeys is start with the server API's keys file: every gateway
// of a cluster reads the same one.
func startWithKeys(t *testing.T, natsURL, keys string) *app.App {
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
		APIKeysFile:     keys,
		Namespaces: map[string]namespace.Namespace{
			"room": {History: true, MaxAge: time.Hour, Presence: true, PresenceTTL: 2 * time.Second},
			"chat": {},
		},
	}
	return testkit.StartApp(t, cfg)
}

func keysFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	doc := `keys:
  - name: backend
    sha256: ` + serverapi.HashKey(keyBackend) + `
    presence: ["room:*"]
    admin: true
  - name: watcher
    sha256: ` + serverapi.HashKey(keyWatcher) + `
    presence: ["room:*"]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func bearer[T any](msg *T, key string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	r.Header().Set("Authorization", "Bearer "+key)
	return r
}

// apiCovered is covered for the API's Coverage message.
func apiCovered(t *testing.T, what string, c *fabricv1.Coverage, gws ...*app.App) {
	t.Helper()
	answered := slices.Clone(c.GetAnswered())
	slices.Sort(answered)
	covered(t, what, ctl.Coverage{Answered: answered, Missing: c.GetMissing()}, gws...)
}

// A backend that reaches ONE gateway through the server API (Connect
// protocol, an API key from the keys file) sees and acts on the users of
// every gateway sharing its NATS: presence and channels are counted on
// both, Disconnect with a ban, Unsubscribe and Revoke reach phoenix.js
// sockets on both, and a key without admin changes nothing.
func TestServerAPIActsOnEveryGateway(t *testing.T) {
	keys := keysFile(t)
	g1 := startWithKeys(t, "", keys)
	g2 := startWithKeys(t, g1.NATSURL(), keys)
	api := fabricv1connect.NewServerAPIClient(http.DefaultClient, "http://"+g1.HTTPAddr())

	aliceTok := mint(t, "alice") // one token held on both gateways
	alice1 := client(t, g1, aliceTok)
	alice2 := client(t, g2, aliceTok)
	bob := client(t, g2, mint(t, "bob"))
	for _, p := range []*phxnode.Puppet{alice1, alice2, bob} {
		join(t, p, "room:lobby", "x")
	}
	malloryTok := mint(t, "mallory")
	m1 := client(t, g1, malloryTok)
	m2 := client(t, g2, malloryTok)
	for _, p := range []*phxnode.Puppet{m1, m2} {
		join(t, p, "chat:m", "m") // chat: no presence, outside room:*
	}

	// Presence, PresenceStats and Channels count both gateways.
	pr, err := api.Presence(ctx(t), bearer(&fabricv1.PresenceRequest{Topic: "room:lobby"}, keyBackend))
	if err != nil {
		t.Fatalf("Presence: %v", err)
	}
	apiCovered(t, "presence", pr.Msg.GetCoverage(), g1, g2)
	es := pr.Msg.GetEntries()
	if len(es) != 2 || es[0].GetKey() != "alice" || len(es[0].GetMetasJson()) != 2 || es[1].GetKey() != "bob" || len(es[1].GetMetasJson()) != 1 {
		t.Fatalf("presence: %v", pr.Msg)
	}
	st, err := api.PresenceStats(ctx(t), bearer(&fabricv1.PresenceStatsRequest{Topic: "room:lobby"}, keyBackend))
	if err != nil {
		t.Fatalf("PresenceStats: %v", err)
	}
	apiCovered(t, "stats", st.Msg.GetCoverage(), g1, g2)
	if st.Msg.GetMembers() != 2 || st.Msg.GetConnections() != 3 {
		t.Fatalf("stats: %v; want 2 members, 3 connections", st.Msg)
	}
	chs, err := api.Channels(ctx(t), bearer(&fabricv1.ChannelsRequest{Pattern: "room:*"}, keyBackend))
	if err != nil {
		t.Fatalf("Channels: %v", err)
	}
	apiCovered(t, "channels", chs.Msg.GetCoverage(), g1, g2)
	if c := chs.Msg.GetChannels(); len(c) != 1 || c[0].GetTopic() != "room:lobby" || c[0].GetMembers() != 3 {
		t.Fatalf("channels room:*: %v; want room:lobby with 3 (1 on g1 + 2 on g2)", chs.Msg)
	}

	// A key without admin: PermissionDenied, and nobody is disconnected
	// (the admin Disconnect below still finds both of mallory's sockets).
	_, err = api.Disconnect(ctx(t), bearer(&fabricv1.DisconnectUserRequest{User: "mallory", BanSeconds: 60}, keyWatcher))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Disconnect with a key lacking admin: %v, want PermissionDenied", err)
	}
	for _, p := range []*phxnode.Puppet{m1, m2} {
		if e, ok := p.Next(300*time.Millisecond, phxnode.IsEv("close")); ok {
			t.Fatalf("a denied Disconnect closed a socket: %s", e)
		}
	}

	// Disconnect with a 2 s ban: both sockets close, reconnects are
	// refused (403 banned) until the ban ends.
	const ban = 2 * time.Second
	began := time.Now()
	dr, err := api.Disconnect(ctx(t), bearer(&fabricv1.DisconnectUserRequest{User: "mallory", Reason: "cheating", BanSeconds: uint64(ban / time.Second)}, keyBackend))
	if err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	t.Logf("Disconnect call returned after %v", time.Since(began).Round(time.Millisecond))
	apiCovered(t, "disconnect", dr.Msg.GetCoverage(), g1, g2)
	if dr.Msg.GetClosed() != 2 {
		t.Fatalf("Disconnect closed %d connections, want 2", dr.Msg.GetClosed())
	}
	for i, p := range []*phxnode.Puppet{m1, m2} {
		if e := closed(t, p, 4011); e.Reason != "cheating" {
			t.Fatalf("close reason %q", e.Reason)
		}
		t.Logf("Disconnect: gateway %d socket closed %v after the call began", i+1, time.Since(began).Round(time.Millisecond))
	}
	for _, p := range []*phxnode.Puppet{m1, m2} {
		r := p.MustNext(wait, "refused", phxnode.IsEv("refused"))
		var status, retry float64
		_ = r.Field("status", &status)
		_ = r.Field("retryAfter", &retry)
		if status != 403 || r.Reason != "banned" || retry < 1 || retry > ban.Seconds()+1 {
			t.Fatalf("refusal during the ban: %s", r)
		}
	}

	// Unsubscribe alice from room:lobby: phx_close on both gateways, the
	// sockets stay open.
	ur, err := api.Unsubscribe(ctx(t), bearer(&fabricv1.UnsubscribeUserRequest{User: "alice", Topic: "room:lobby"}, keyBackend))
	if err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	apiCovered(t, "unsubscribe", ur.Msg.GetCoverage(), g1, g2)
	if ur.Msg.GetClosed() != 2 {
		t.Fatalf("Unsubscribe closed %d channel instances, want 2", ur.Msg.GetClosed())
	}
	for _, p := range []*phxnode.Puppet{alice1, alice2} {
		p.MustNext(wait, "phx_close", phxnode.IsMsg("room:lobby", "phx_close"))
		p.MustNext(wait, "chan_close", phxnode.OnTopic("chan_close", "room:lobby"))
		if s := p.State(); s.Channels["room:lobby"] != "closed" || !s.Connected {
			t.Fatalf("after unsubscribe: %+v", s)
		}
	}
	st, err = api.PresenceStats(ctx(t), bearer(&fabricv1.PresenceStatsRequest{Topic: "room:lobby"}, keyBackend))
	if err != nil || st.Msg.GetMembers() != 1 || st.Msg.GetConnections() != 1 {
		t.Fatalf("room:lobby after unsubscribe: %v %v (want bob only)", st, err)
	}

	// Revoke alice's token by jti: its holders close on both gateways.
	rbegan := time.Now()
	rr, err := api.Revoke(ctx(t), bearer(&fabricv1.RevokeRequest{Jti: jti(t, aliceTok), TtlSeconds: 3600}, keyBackend))
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	t.Logf("Revoke call returned after %v", time.Since(rbegan).Round(time.Millisecond))
	apiCovered(t, "revoke", rr.Msg.GetCoverage(), g1, g2)
	if rr.Msg.GetClosed() != 2 {
		t.Fatalf("Revoke closed %d connections, want 2", rr.Msg.GetClosed())
	}
	for i, p := range []*phxnode.Puppet{alice1, alice2} {
		closed(t, p, 4012)
		t.Logf("Revoke: gateway %d holder closed %v after the call began", i+1, time.Since(rbegan).Round(time.Millisecond))
	}
	for _, p := range []*phxnode.Puppet{alice1, alice2} {
		r := p.MustNext(wait, "refused", phxnode.IsEv("refused"))
		var status float64
		_ = r.Field("status", &status)
		if status != 401 || r.Reason != "token_revoked" {
			t.Fatalf("reconnect with the revoked token: %s", r)
		}
	}

	// The ban ends: mallory's phoenix.js sockets are admitted again.
	for i, p := range []*phxnode.Puppet{m1, m2} {
		p.MustNext(ban+wait, "reopen after the ban", phxnode.IsEv("open"))
		d := time.Since(began)
		if d < ban {
			t.Fatalf("reconnected %v after a %v ban began", d, ban)
		}
		t.Logf("ban: gateway %d socket reopened %v after Disconnect began", i+1, d.Round(time.Millisecond))
	}
	if e, ok := bob.Next(0, phxnode.IsEv("close")); ok {
		t.Fatalf("bob's socket closed: %s", e)
	}
	if s := bob.State(); s.Channels["room:lobby"] != "joined" || !s.Connected {
		t.Fatalf("bob after all that: %+v", s)
	}
}
