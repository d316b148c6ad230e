package natsctl

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// fakeGW is a gateway's local view in memory; block makes every answer
// wait until the channel is closed (a stuck gateway).
type fakeGW struct {
	mu       sync.Mutex
	presence map[string]map[string][]json.RawMessage
	closed   []string
	block    chan struct{}
	refused  func() int
}

func (f *fakeGW) wait() {
	if f.block != nil {
		<-f.block
	}
}

func (f *fakeGW) LocalPresence(topic string) map[string][]json.RawMessage {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.presence[topic]
}
func (f *fakeGW) LocalChannels(string) ([]control.ChannelInfo, error) {
	f.wait()
	var out []control.ChannelInfo
	for t, p := range f.presence {
		out = append(out, control.ChannelInfo{Topic: t, Members: len(p)})
	}
	return out, nil
}
func (f *fakeGW) DisconnectUser(user string, code int, reason string) int {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = append(f.closed, user)
	return 1
}
func (f *fakeGW) UnsubscribeUser(user, topic string) int { f.wait(); return 1 }
func (f *fakeGW) CloseRefused() int {
	f.wait()
	if f.refused != nil {
		return f.refused()
	}
	return 0
}
func (f *fakeGW) LocalCounts() (int, int) { f.wait(); return 3, len(f.presence) }

func meta(s string) json.RawMessage { return json.RawMessage(`{"n":"` + s + `"}`) }

func TestScatterGatherCountsEveryGatewayAndReportsTheSilentOne(t *testing.T) {
	srv := natstest.RunServer(t)
	a := &fakeGW{presence: map[string]map[string][]json.RawMessage{"room:1": {"alice": {meta("a1")}, "bob": {meta("b1")}}}}
	b := &fakeGW{presence: map[string]map[string][]json.RawMessage{"room:1": {"alice": {meta("a2")}}}}
	stuck := &fakeGW{block: make(chan struct{})}
	defer close(stuck.block) // before the responders' Close, which waits for it
	for id, l := range map[string]Local{"gw-a": a, "gw-b": b, "gw-stuck": stuck} {
		r, err := StartResponder(ResponderConfig{Conn: natstest.Connect(t, srv), ID: id, Local: l, Heartbeat: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
	}
	c, err := NewCluster(ClusterConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond) // the hello's heartbeats

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	p, err := c.Presence(ctx, "room:1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Answered, []string{"gw-a", "gw-b"}) || !slices.Equal(p.Missing, []string{"gw-stuck"}) {
		t.Fatalf("coverage: answered %v missing %v", p.Answered, p.Missing)
	}
	if time.Since(start) < time.Second {
		t.Fatalf("returned after %v, before the deadline, with a gateway still silent", time.Since(start))
	}
	if len(p.Entries) != 2 || p.Entries[0].Key != "alice" || len(p.Entries[0].Metas) != 2 || p.Entries[1].Key != "bob" {
		t.Fatalf("entries: %+v", p.Entries)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	st, err := c.PresenceStats(ctx2, "room:1")
	if err != nil || st.Members != 2 || st.Connections != 3 {
		t.Fatalf("stats %+v, %v: want 2 members, 3 connections", st, err)
	}
}

func TestAllAnsweredReturnsBeforeTheDeadline(t *testing.T) {
	srv := natstest.RunServer(t)
	for _, id := range []string{"gw-1", "gw-2"} {
		r, err := StartResponder(ResponderConfig{Conn: natstest.Connect(t, srv), ID: id, Local: &fakeGW{}, Version: "v-test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
	}
	c, err := NewCluster(ClusterConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(1500 * time.Millisecond) // warm
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v with every gateway answering", d)
	}
	if len(info.Gateways) != 2 || len(info.Missing) != 0 || info.Gateways[0].Version != "v-test" || info.Gateways[0].Connections != 3 {
		t.Fatalf("info %+v", info)
	}
	if !info.NATS.JetStream {
		t.Fatalf("JetStream not reported: %+v", info.NATS)
	}
}

func TestRevocationsPersistAndExpire(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r1, err := OpenRevocations(ctx, RevocationsConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	changed := make(chan struct{}, 10)
	r2, err := OpenRevocations(ctx, RevocationsConfig{Conn: natstest.Connect(t, srv), OnChange: func() { changed <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	now := time.Now()
	soon := now.Add(5 * time.Second).UnixMilli() // long enough for a loaded machine to check it first
	for _, e := range []entry{
		{Kind: kindJTI, JTI: "tok/1 ü", Until: now.Add(time.Hour).UnixMilli()},
		{Kind: kindUser, User: "alice", Before: now.UnixMilli(), Until: now.Add(time.Hour).UnixMilli()},
		{Kind: kindBan, User: "mallory", Until: soon},
	} {
		if err := r1.add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// r2 learns them through its watch (how a gateway that missed the
	// request learns them).
	for i := 0; i < 3; i++ {
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("watch delivered %d of 3 entries", i)
		}
	}
	t.Logf("three entries written and seen by another gateway's watch within %v", time.Since(now).Round(time.Millisecond))
	// A third copy opened now (a gateway started later) reads them all.
	r3, err := OpenRevocations(ctx, RevocationsConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	for _, r := range []*Revocations{r2, r3} {
		cases := []struct {
			sub, jti string
			iat      time.Time
			want     string
		}{
			{"bob", "tok/1 ü", now, ReasonRevoked},
			{"bob", "tok/2", now, ""},
			{"alice", "", now.Add(-time.Minute), ReasonRevoked},
			{"alice", "", time.Time{}, ReasonRevoked}, // no iat: cannot be shown newer
			{"alice", "", now.Add(time.Second), ""},
			{"mallory", "x", now.Add(time.Hour), ReasonBanned},
		}
		for _, c := range cases {
			if got, _ := r.Refusal(c.sub, auth.JTIKey(c.jti), c.iat); got != c.want {
				t.Errorf("Refusal(%q, %q, %v) = %q, want %q", c.sub, c.jti, c.iat, got, c.want)
			}
		}
	}
	time.Sleep(time.Until(time.UnixMilli(soon)) + 100*time.Millisecond)
	if got, _ := r3.Refusal("mallory", 0, now); got != "" {
		t.Fatalf("ban still in force after its end: %q", got)
	}
}

// Until the list was read once, every token is refused: the checks fail
// closed (OpenRevocations does not return before the read, so a gateway
// never serves in this state; this pins what Refusal says if it did).
func TestUnreadListFailsClosed(t *testing.T) {
	r := newRevocations(RevocationsConfig{})
	if got, _ := r.Refusal("anyone", 0, time.Now()); got != ReasonUnavailable {
		t.Fatalf("unread list: %q, want %q", got, ReasonUnavailable)
	}
}

func TestBadRequestsAreRefusedBeforeAnythingIsSent(t *testing.T) {
	srv := natstest.RunServer(t)
	c, err := NewCluster(ClusterConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Disconnect(ctx, control.DisconnectRequest{User: "u", Code: 1005}); err == nil {
		t.Error("close code 1005 accepted")
	}
	if _, err := c.Disconnect(ctx, control.DisconnectRequest{User: "u", Ban: time.Minute}); err == nil {
		t.Error("ban without a revocation list accepted")
	}
	if _, err := c.Channels(ctx, "room:*x"); err == nil {
		t.Error("bad pattern accepted")
	}
	if _, err := c.Revoke(ctx, control.RevokeRequest{JTI: "a", User: "b"}); err == nil {
		t.Error("revoke of jti and user at once accepted")
	}
}

// erringGW answers every request with an error (as for a malformed one).
type erringGW struct{ fakeGW }

func (*erringGW) LocalChannels(string) ([]control.ChannelInfo, error) {
	return nil, errTest
}

var errTest = errors.New("pattern rejected here")

// When every gateway answers with an error, the caller gets that error,
// and the gateways are reported Missing (they gave no result).
func TestEveryGatewayFailingIsAnError(t *testing.T) {
	srv := natstest.RunServer(t)
	gwConn := natstest.Connect(t, srv)
	r, err := StartResponder(ResponderConfig{Conn: gwConn, ID: "gw-err", Local: &erringGW{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	// The responder's SUB must reach the server before the request from
	// the other connection does (it failed in CI with "no responders").
	if err := gwConn.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := NewCluster(ClusterConfig{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := c.Channels(ctx, "room:*")
	if err == nil || !strings.Contains(err.Error(), errTest.Error()) {
		t.Fatalf("err %v, want the gateway's error", err)
	}
	if !slices.Equal(res.Missing, []string{"gw-err"}) {
		t.Fatalf("missing %v", res.Missing)
	}
}
