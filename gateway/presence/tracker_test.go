package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// fakeNet is an in-memory bus shared by several trackers; delivery is
// synchronous.
type fakeNet struct {
	mu   sync.Mutex
	subs map[string][]*fakeSub
	pubs map[string][]string // per sender gateway bus: message kinds published
	drop func(from *fakeBus, msg []byte) bool
}

type fakeSub struct {
	bus *fakeBus
	h   func([]byte, func([]byte) error)
}

func (s *fakeSub) Unsubscribe() error {
	n := s.bus.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for topic, l := range n.subs {
		for i, x := range l {
			if x == s {
				n.subs[topic] = append(l[:i:i], l[i+1:]...)
			}
		}
	}
	return nil
}

type fakeBus struct {
	n    *fakeNet
	name string
	dead bool // guarded by n.mu: sends nothing, receives nothing
}

func newNet() *fakeNet {
	return &fakeNet{subs: map[string][]*fakeSub{}, pubs: map[string][]string{}}
}

// rooms tracks presence on room:* with a 2 s TTL.
var rooms = namespace.MustNew(map[string]namespace.Namespace{"room": {Presence: true, PresenceTTL: 2 * time.Second}})

func (b *fakeBus) PresenceSubscribe(_ context.Context, topic string, h func([]byte, func([]byte) error)) (broker.Subscription, error) {
	s := &fakeSub{bus: b, h: h}
	b.n.mu.Lock()
	b.n.subs[topic] = append(b.n.subs[topic], s)
	b.n.mu.Unlock()
	return s, nil
}

func (b *fakeBus) targets(topic string, msg []byte) []*fakeSub {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	var w wire
	json.Unmarshal(msg, &w)
	b.n.pubs[b.name] = append(b.n.pubs[b.name], w.T)
	if b.dead || (b.n.drop != nil && b.n.drop(b, msg)) {
		return nil
	}
	var out []*fakeSub
	for _, s := range b.n.subs[topic] {
		if !s.bus.dead {
			out = append(out, s)
		}
	}
	return out
}

func (b *fakeBus) PresencePublish(topic string, msg []byte) error {
	for _, s := range b.targets(topic, msg) {
		s.h(msg, nil)
	}
	return nil
}

func (b *fakeBus) PresenceRequest(_ context.Context, topic string, req []byte, _ time.Duration, h func([]byte) bool) error {
	for _, s := range b.targets(topic, req) {
		s.h(req, func(d []byte) error {
			b.n.mu.Lock()
			dead := b.dead || s.bus.dead
			b.n.mu.Unlock()
			if !dead {
				h(d)
			}
			return nil
		})
	}
	return nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTracker(t *testing.T, n *fakeNet, name string, c *clock) (*Tracker, *fakeBus) {
	return newTrackerWith(t, n, name, c, Config{})
}

func newTrackerWith(t *testing.T, n *fakeNet, name string, c *clock, cfg Config) (*Tracker, *fakeBus) {
	b := &fakeBus{n: n, name: name}
	if cfg.Namespaces == nil {
		cfg.Namespaces = rooms
	}
	cfg.Bus, cfg.GatewayID, cfg.manual, cfg.now, cfg.Grace = b, name, true, c.now, time.Second
	tr := New(cfg)
	t.Cleanup(tr.Close)
	return tr, b
}

// client models phoenix.js's Presence: key -> phx_ref -> meta.
type client struct {
	conn   *transporttest.Conn
	seen   int
	view   map[string]map[string]map[string]any
	state  bool
	states int
	diffs  int
	count  struct{ Count, Metas int } // the last fabric:presence_count
	counts int
}

func newClient() *client { return &client{conn: transporttest.NewConn()} }

func (c *client) member(topic, key string) Member {
	return Member{Conn: c.conn, Version: phoenix.V2, JoinRef: phoenix.R("1"), ConnID: "conn-" + key,
		Params: []byte(fmt.Sprintf(`{"user":%q,"meta":{"name":%q}}`, key, strings.ToUpper(key)))}
}

type groups map[string]struct {
	Metas []map[string]any `json:"metas"`
}

// read applies every new frame to the view.
func (c *client) read(t *testing.T) {
	t.Helper()
	msgs := c.conn.Sent()
	for _, msg := range msgs[c.seen:] {
		m := struct{ Data []byte }{msg.Bytes()}
		var f []json.RawMessage
		if err := json.Unmarshal(m.Data, &f); err != nil || len(f) != 5 {
			t.Fatalf("bad frame %s", m.Data)
		}
		var event string
		json.Unmarshal(f[3], &event)
		switch event {
		case EventState:
			if string(f[0]) != `"1"` || string(f[1]) != "null" {
				t.Fatalf("presence_state must carry the join_ref and a null ref: %s", m.Data)
			}
			var g groups
			if err := json.Unmarshal(f[4], &g); err != nil {
				t.Fatalf("state %s: %v", f[4], err)
			}
			c.view = map[string]map[string]map[string]any{}
			c.apply(g, true)
			c.state = true
			c.states++
		case EventDiff:
			if string(f[0]) != "null" {
				t.Fatalf("presence_diff must have a null join_ref: %s", m.Data)
			}
			var d struct {
				Joins  groups `json:"joins"`
				Leaves groups `json:"leaves"`
			}
			if err := json.Unmarshal(f[4], &d); err != nil {
				t.Fatalf("diff %s: %v", f[4], err)
			}
			if c.view == nil {
				c.view = map[string]map[string]map[string]any{}
			}
			c.apply(d.Joins, true)
			c.apply(d.Leaves, false)
			c.diffs++
		case EventCount:
			if string(f[0]) != "null" || string(f[1]) != "null" {
				t.Fatalf("%s must have null refs: %s", EventCount, m.Data)
			}
			if err := json.Unmarshal(f[4], &c.count); err != nil {
				t.Fatalf("count %s: %v", f[4], err)
			}
			c.counts++
		default:
			t.Fatalf("unexpected event %q", event)
		}
	}
	c.seen = len(msgs)
}

func (c *client) apply(g groups, join bool) {
	for key, p := range g {
		for _, m := range p.Metas {
			ref, _ := m["phx_ref"].(string)
			if join {
				if c.view[key] == nil {
					c.view[key] = map[string]map[string]any{}
				}
				c.view[key][ref] = m
			} else if c.view[key] != nil {
				delete(c.view[key], ref)
				if len(c.view[key]) == 0 {
					delete(c.view, key)
				}
			}
		}
	}
}

func (c *client) keys() string {
	var ks []string
	for k, refs := range c.view {
		ks = append(ks, fmt.Sprintf("%s×%d", k, len(refs)))
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

// settle waits for the trackers' background syncs (a directed sync
// request goes out on its own goroutine when a gateway is first heard
// of). A test that then silences a gateway must not have its answer land
// later: the answer counts as hearing from that gateway at the fake
// clock's time when it lands, which postpones its expiry by a TTL.
func settle(trs ...*Tracker) {
	for _, tr := range trs {
		tr.bg.Wait()
	}
}

func waitSynced(t *testing.T, tr *Tracker, topic string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		tr.mu.Lock()
		ch := tr.channel(topic)
		ok := ch != nil && !ch.syncing
		tr.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never synced", topic)
}

func TestStateAndBatchedDiff(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	a := newClient()
	tr.Track("room:1", a, a.member("room:1", "u1"))
	waitSynced(t, tr, "room:1")
	a.read(t)
	if a.state {
		t.Fatal("state before the flush")
	}
	tr.flush() // the state goes out with the next flush
	a.read(t)
	if !a.state || a.keys() != "u1×1" {
		t.Fatalf("state: %v %s", a.state, a.keys())
	}
	meta := a.view["u1"]
	for _, m := range meta {
		if m["name"] != "U1" || m["online_at"].(float64) != 1000_000 || m["phx_ref"] == "" {
			t.Fatalf("meta %v", m)
		}
	}
	tr.flush()
	a.read(t)
	if a.diffs != 0 {
		t.Fatal("a got a diff already reflected in its state")
	}

	// Three changes within one flush interval: one diff, one bus message.
	b, d := newClient(), newClient()
	n.pubs["A"] = nil
	tr.Track("room:1", b, b.member("room:1", "u2"))
	tr.Track("room:1", d, d.member("room:1", "u3"))
	tr.Untrack("room:1", d)
	tr.Untrack("room:1", d) // idempotent
	tr.flush()
	a.read(t)
	if a.diffs != 1 || a.keys() != "u1×1 u2×1" {
		t.Fatalf("after batch: %d diffs, %s", a.diffs, a.keys())
	}
	if fmt.Sprint(n.pubs["A"]) != "[diff]" {
		t.Fatalf("bus messages %v", n.pubs["A"])
	}
	tr.flush()
	a.read(t)
	if a.diffs != 1 {
		t.Fatal("empty flush sent a diff")
	}
}

func TestSeveralMetasPerKeyAndUpdate(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	obs := newClient()
	tr.Track("room:1", obs, obs.member("room:1", "obs"))
	waitSynced(t, tr, "room:1")
	tab1, tab2 := newClient(), newClient()
	tr.Track("room:1", tab1, tab1.member("room:1", "u1"))
	tr.Track("room:1", tab2, tab2.member("room:1", "u1"))
	tr.flush()
	obs.read(t)
	tab2.read(t)
	if obs.keys() != "obs×1 u1×2" || tab2.keys() != "obs×1 u1×2" {
		t.Fatalf("two tabs: %s / %s", obs.keys(), tab2.keys())
	}
	tr.Untrack("room:1", tab1)
	tr.flush()
	obs.read(t)
	if obs.keys() != "obs×1 u1×1" {
		t.Fatalf("one tab left: %s", obs.keys())
	}

	// Update: the old meta leaves, the new one joins with phx_ref_prev.
	var oldRef string
	for r := range obs.view["u1"] {
		oldRef = r
	}
	before := len(obs.conn.Sent())
	if !tr.Update("room:1", tab2, json.RawMessage(`{"typing":true}`)) {
		t.Fatal("update refused")
	}
	tr.flush()
	raw := obs.conn.Sent()[before].Data
	var f []json.RawMessage
	json.Unmarshal(raw, &f)
	var d struct {
		Joins  groups `json:"joins"`
		Leaves groups `json:"leaves"`
	}
	json.Unmarshal(f[4], &d)
	if len(d.Leaves["u1"].Metas) != 1 || d.Leaves["u1"].Metas[0]["phx_ref"] != oldRef {
		t.Fatalf("update leaves: %s", f[4])
	}
	nm := d.Joins["u1"].Metas
	if len(nm) != 1 || nm[0]["phx_ref_prev"] != oldRef || nm[0]["phx_ref"] == oldRef || nm[0]["typing"] != true {
		t.Fatalf("update joins: %s", f[4])
	}
	obs.read(t)
	if obs.keys() != "obs×1 u1×1" {
		t.Fatalf("after update: %s", obs.keys())
	}
}

func TestClusterJoinLeaveAndExpiry(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	ta, _ := newTracker(t, n, "A", c)
	tb, bb := newTracker(t, n, "B", c)
	a := newClient()
	ta.Track("room:x", a, a.member("room:x", "alice"))
	waitSynced(t, ta, "room:x")
	ta.flush()
	// B starts serving the channel: its first member's state has alice.
	b := newClient()
	tb.Track("room:x", b, b.member("room:x", "bob"))
	waitSynced(t, tb, "room:x")
	tb.flush()
	b.read(t)
	if b.keys() != "alice×1 bob×1" {
		t.Fatalf("b's state: %s", b.keys())
	}
	tb.flush()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("a sees %s", a.keys())
	}
	// A second member on B, then a leave: diffs cross the bus.
	b2 := newClient()
	tb.Track("room:x", b2, b2.member("room:x", "carol"))
	tb.flush()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1 carol×1" {
		t.Fatalf("a sees %s", a.keys())
	}
	tb.Untrack("room:x", b2)
	tb.flush()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("after carol left a sees %s", a.keys())
	}

	// Heartbeats keep B alive past the TTL.
	for i := 0; i < 6; i++ {
		c.add(700 * time.Millisecond)
		tb.housekeep(c.now())
		ta.housekeep(c.now())
	}
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("heartbeats: a sees %s", a.keys())
	}
	// B dies silently: after its TTL its members leave A's clients.
	settle(ta, tb)
	n.mu.Lock()
	bb.dead = true
	n.mu.Unlock()
	c.add(1500 * time.Millisecond)
	ta.housekeep(c.now())
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("expired too early: %s", a.keys())
	}
	c.add(time.Second)
	ta.housekeep(c.now())
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1" {
		t.Fatalf("after B's TTL a sees %s", a.keys())
	}
}

func TestMissedDiffResyncs(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	ta, _ := newTracker(t, n, "A", c)
	tb, _ := newTracker(t, n, "B", c)
	a := newClient()
	ta.Track("room:y", a, a.member("room:y", "alice"))
	waitSynced(t, ta, "room:y")
	b := newClient()
	tb.Track("room:y", b, b.member("room:y", "bob"))
	waitSynced(t, tb, "room:y")
	tb.flush()
	ta.flush()
	a.read(t)
	// Lose B's next diff (carol joins).
	var lost bool
	n.mu.Lock()
	defer func() { n.mu.Lock(); n.drop = nil; n.mu.Unlock() }()
	n.drop = func(from *fakeBus, msg []byte) bool {
		if from.name == "B" && strings.Contains(string(msg), `"t":"diff"`) && !lost {
			lost = true
			return true
		}
		return false
	}
	n.mu.Unlock()
	b2 := newClient()
	tb.Track("room:y", b2, b2.member("room:y", "carol"))
	tb.flush()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("lost diff: %s", a.keys())
	}
	// The next heartbeat shows A is behind: A asks B for its state.
	c.add(time.Second)
	tb.housekeep(c.now())
	waitFor(t, func() bool { ta.flush(); a.read(t); return a.keys() == "alice×1 bob×1 carol×1" }, a)
}

func waitFor(t *testing.T, ok func() bool, c *client) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not converged: %s", c.keys())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestByeAndIdleDrop(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	ta, _ := newTracker(t, n, "A", c)
	tb, _ := newTracker(t, n, "B", c)
	a := newClient()
	ta.Track("room:z", a, a.member("room:z", "alice"))
	waitSynced(t, ta, "room:z")
	b := newClient()
	tb.Track("room:z", b, b.member("room:z", "bob"))
	waitSynced(t, tb, "room:z")
	tb.flush()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1 bob×1" {
		t.Fatalf("a sees %s", a.keys())
	}
	// Graceful shutdown of B: its members are gone at once.
	tb.Close()
	ta.flush()
	a.read(t)
	if a.keys() != "alice×1" {
		t.Fatalf("after bye a sees %s", a.keys())
	}
	// A's channel is dropped after the grace once empty.
	ta.Untrack("room:z", a)
	ta.flush()
	c.add(2 * time.Second)
	ta.housekeep(c.now())
	ta.mu.Lock()
	left := ta.chans.n
	ta.mu.Unlock()
	if left != 0 {
		t.Fatal("idle channel kept")
	}
	n.mu.Lock()
	subs := len(n.subs["room:z"])
	n.mu.Unlock()
	if subs != 0 {
		t.Fatalf("%d subscriptions left", subs)
	}
}

func TestKeysAndMetas(t *testing.T) {
	for _, tc := range []struct {
		m    Member
		want string
	}{
		{Member{Sub: "jwt-user", ConnID: "c", Params: []byte(`{"user":"x"}`)}, "jwt-user"},
		{Member{ConnID: "c", Params: []byte(`{"presence_key":"pk","user":"x"}`)}, "pk"},
		{Member{ConnID: "c", Params: []byte(`{"user":42}`)}, "42"},
		{Member{ConnID: "c", Params: []byte(`{"user":{"no":1}}`)}, "c"},
		{Member{ConnID: "c", Params: []byte(`{}`)}, "c"},
		{Member{ConnID: "c", Params: []byte(`null`)}, "c"},
	} {
		if got := presenceKey(tc.m); got != tc.want {
			t.Errorf("key of %s = %q, want %q", tc.m.Params, got, tc.want)
		}
	}
	now := time.UnixMilli(1234)
	for _, tc := range []struct {
		params, want string
	}{
		{`{"meta":{"name":"a","phx_ref":"evil","online_at":1}}`, `{"name":"a","online_at":1234,"phx_ref":"FR1"}`},
		{`{"meta":"busy"}`, `{"meta":"busy","online_at":1234,"phx_ref":"FR1"}`},
		{`{"meta":null}`, `{"online_at":1234,"phx_ref":"FR1"}`},
		{`{"other":1}`, `{"online_at":1234,"phx_ref":"FR1"}`},
		{`{"meta":"` + strings.Repeat("x", 2000) + `"}`, `{"online_at":1234,"phx_ref":"FR1"}`},
	} {
		if got := string(testMeta(now, []byte(tc.params), "meta", 1024)); got != tc.want {
			t.Errorf("meta of %.60s = %s, want %s", tc.params, got, tc.want)
		}
	}
}

// stallBus holds directed sync requests until their context ends, as a
// NATS request waits out its window.
type stallBus struct {
	*fakeBus
	entered chan struct{}
	mu      sync.Mutex
	ended   error // the held request's end (nil while it is held)
}

func (b *stallBus) PresenceRequest(ctx context.Context, topic string, req []byte, w time.Duration, h func([]byte) bool) error {
	if !strings.Contains(string(req), `"to":`) {
		return b.fakeBus.PresenceRequest(ctx, topic, req, w, h)
	}
	close(b.entered)
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
	}
	b.mu.Lock()
	b.ended = fmt.Errorf("ended: %w", context.Cause(ctx))
	b.mu.Unlock()
	return ctx.Err()
}

// Close ends the sync requests under way and waits for them: none of the
// tracker's goroutines uses the bus after Close returned.
func TestCloseEndsSyncRequests(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	sb := &stallBus{fakeBus: &fakeBus{n: n, name: "A"}, entered: make(chan struct{})}
	ta := New(Config{Bus: sb, Namespaces: rooms, GatewayID: "A", manual: true, now: c.now})
	t.Cleanup(ta.Close)
	tb, _ := newTracker(t, n, "B", c)
	a := newClient()
	ta.Track("room:q", a, a.member("room:q", "alice"))
	waitSynced(t, ta, "room:q")
	b := newClient()
	tb.Track("room:q", b, b.member("room:q", "bob"))
	waitSynced(t, tb, "room:q")
	tb.flush() // A first hears of B: it asks B for its state
	select {
	case <-sb.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("A never asked B for its state")
	}
	ta.Close()
	sb.mu.Lock()
	ended := sb.ended
	sb.mu.Unlock()
	if !errors.Is(ended, context.Canceled) {
		t.Fatalf("after Close the sync request is still under way (%v)", ended)
	}
}

// testMeta is the meta object a member with params gets (ref 1 of
// gateway "R": "FR1").
func testMeta(now time.Time, params []byte, metaKey string, maxBytes int) json.RawMessage {
	t := &Tracker{cfg: Config{MaxMetaBytes: maxBytes}, refPrefix: refPrefix("R")}
	return t.buildMeta(1, 0, now, params, metaKey)
}
