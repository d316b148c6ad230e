package hub_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// wait bounds every wait; generous because CI machines can be loaded.
const wait = 10 * time.Second

func newHub(t *testing.T, b *memory.Broker, grace time.Duration) *hub.Hub {
	t.Helper()
	h := hub.New(hub.Config{Broker: b, LeaveGrace: grace})
	t.Cleanup(h.Close)
	return h
}

// member returns a fresh member on its own fake conn; the conn is the key.
func member(v phoenix.Version) (hub.Member, *transporttest.Conn) {
	c := transporttest.NewConn()
	return hub.Member{Conn: c, Version: v, Key: c}, c
}

// waitFor polls cond until it holds or wait passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustJoin(t *testing.T, h *hub.Hub, topic string, m hub.Member) {
	t.Helper()
	if err := h.Join(context.Background(), topic, m); err != nil {
		t.Fatalf("Join(%q): %v", topic, err)
	}
}

func TestJoinSubscribesOnce(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	const n = 100
	conns := make([]*transporttest.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		m, c := member(phoenix.V2)
		conns[i] = c
		wg.Go(func() {
			if !h.TryJoin("room:1", m) {
				if err := h.Join(context.Background(), "room:1", m); err != nil {
					t.Errorf("Join: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if got := b.SubscribeCalls(); got != 1 {
		t.Fatalf("SubscribeCalls = %d, want 1", got)
	}
	if got := b.Subscriptions("room:1"); got != 1 {
		t.Fatalf("Subscriptions = %d, want 1", got)
	}
	if got := h.Members("room:1"); got != n {
		t.Fatalf("Members = %d, want %d", got, n)
	}
	if got := h.Stats().Channels; got != 1 {
		t.Fatalf("Stats().Channels = %d, want 1", got)
	}

	const msgs = 20
	for i := range msgs {
		if _, err := b.Publish(context.Background(), "room:1", "news", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns {
		got := c.WaitLen(msgs, wait)
		if len(got) != msgs {
			t.Fatalf("member %d got %d messages, want %d", i, len(got), msgs)
		}
		for j, m := range got {
			if want := fmt.Sprintf(`[null,null,"room:1","news",{"n":%d}]`, j); string(m.Data) != want || m.Binary {
				t.Fatalf("member %d message %d = %s (binary %v), want %s", i, j, m.Data, m.Binary, want)
			}
		}
	}
	// Nothing more arrives: each message went to each member exactly once.
	time.Sleep(20 * time.Millisecond)
	for i, c := range conns {
		if got := c.Len(); got != msgs {
			t.Fatalf("member %d got %d messages, want exactly %d", i, got, msgs)
		}
	}
	if got := h.Stats().Delivered; got != n*msgs {
		t.Fatalf("Stats().Delivered = %d, want %d", got, n*msgs)
	}
}

func TestJoinSameKeyTwice(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	m, c := member(phoenix.V2)
	mustJoin(t, h, "t", m)
	mustJoin(t, h, "t", m)
	if !h.TryJoin("t", m) {
		t.Fatal("TryJoin on a live topic = false")
	}
	if got := h.Members("t"); got != 1 {
		t.Fatalf("Members = %d, want 1", got)
	}
	b.Deliver(&broker.Message{Topic: "t", Event: "e", Payload: []byte("{}")})
	if got := c.Len(); got != 1 {
		t.Fatalf("got %d messages, want 1", got)
	}
}

// TestEncodings checks the frames of every message kind for both variants.
func TestEncodings(t *testing.T) {
	t.Parallel()
	bin := []byte{0, 1, 2, 0xff}
	kind2 := func(topic, event string, payload []byte) string {
		return string(append(append([]byte{2, byte(len(topic)), byte(len(event))}, topic+event...), payload...))
	}
	type frame struct {
		binary bool
		data   string
	}
	for _, tc := range []struct {
		name   string
		msg    broker.Message
		v1, v2 []frame
	}{{
		name: "text",
		msg:  broker.Message{Topic: "room:1", Event: "news", Payload: []byte(`{"n":1}`)},
		v1:   []frame{{false, `{"topic":"room:1","event":"news","payload":{"n":1},"ref":null}`}},
		v2:   []frame{{false, `[null,null,"room:1","news",{"n":1}]`}},
	}, {
		name: "binary",
		msg:  broker.Message{Topic: "room:1", Event: "bin", Payload: bin, Binary: true},
		v1:   []frame{{false, `{"topic":"room:1","event":"bin","payload":{"base64":"AAEC/w=="},"ref":null}`}},
		v2:   []frame{{true, kind2("room:1", "bin", bin)}},
	}, {
		name: "text offset",
		msg:  broker.Message{Topic: "room:1", Event: "news", Payload: []byte(`{"n":1}`), Offset: 42},
		v1:   []frame{{false, `{"topic":"room:1","event":"news","payload":{"n":1},"ref":"42"}`}},
		v2:   []frame{{false, `[null,"42","room:1","news",{"n":1}]`}},
	}, {
		name: "binary offset",
		msg:  broker.Message{Topic: "room:1", Event: "bin", Payload: bin, Binary: true, Offset: 7},
		v1:   []frame{{false, `{"topic":"room:1","event":"bin","payload":{"base64":"AAEC/w=="},"ref":"7"}`}},
		v2: []frame{
			{true, kind2("room:1", "bin", bin)},
			{false, `[null,"7","room:1","fabric:offset",{"offset":"7"}]`},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := memory.New()
			h := newHub(t, b, time.Hour)
			m1, c1 := member(phoenix.V1)
			m2, c2 := member(phoenix.V2)
			mustJoin(t, h, "room:1", m1)
			mustJoin(t, h, "room:1", m2)
			b.Inject(tc.msg) // asynchronous, as from the bus
			for _, x := range []struct {
				name string
				c    *transporttest.Conn
				want []frame
			}{{"v1", c1, tc.v1}, {"v2", c2, tc.v2}} {
				x.c.WaitLen(len(x.want), wait)
				time.Sleep(5 * time.Millisecond) // anything extra would show up now
				got := x.c.Sent()
				if len(got) != len(x.want) {
					t.Fatalf("%s: got %d frames, want %d", x.name, len(got), len(x.want))
				}
				for i, w := range x.want {
					if got[i].Binary != w.binary || string(got[i].Data) != w.data {
						t.Errorf("%s frame %d = (binary %v) %q, want (binary %v) %q", x.name, i, got[i].Binary, got[i].Data, w.binary, w.data)
					}
				}
			}
		})
	}
}

func TestEncodeFailureSkipsV2Only(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	m1, c1 := member(phoenix.V1)
	m2, c2 := member(phoenix.V2)
	mustJoin(t, h, "t", m1)
	mustJoin(t, h, "t", m2)
	b.Deliver(&broker.Message{Topic: "t", Event: fmt.Sprintf("%0300d", 0), Payload: []byte{0xff}, Binary: true})
	if c2.Len() != 0 {
		t.Fatal("v2 member got a frame for an event over 255 bytes")
	}
	if c1.Len() != 1 {
		t.Fatalf("v1 member got %d frames, want 1 (base64 has no length limit)", c1.Len())
	}
	if got := h.Stats().EncodeErrors; got != 1 {
		t.Fatalf("EncodeErrors = %d, want 1", got)
	}
}

// TestEncodeOnce checks that every member of one variant is handed the same
// *transport.Message, so the frame is built (and framed) once.
func TestEncodeOnce(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	var v1, v2 []*transporttest.Conn
	for i := range 20 {
		v := phoenix.V1
		if i%2 == 0 {
			v = phoenix.V2
		}
		m, c := member(v)
		mustJoin(t, h, "t", m)
		if v == phoenix.V1 {
			v1 = append(v1, c)
		} else {
			v2 = append(v2, c)
		}
	}
	for _, msg := range []broker.Message{
		{Topic: "t", Event: "e", Payload: []byte(`{}`)},
		{Topic: "t", Event: "e", Payload: []byte{1}, Binary: true, Offset: 3},
	} {
		for _, c := range append(v1, v2...) {
			c.Reset()
		}
		b.Deliver(&msg)
		check := func(name string, conns []*transporttest.Conn) *transport.Message {
			first := conns[0].Sent()
			for _, c := range conns[1:] {
				got := c.Sent()
				if len(got) != len(first) {
					t.Fatalf("%s: %d vs %d frames", name, len(got), len(first))
				}
				for i := range got {
					if got[i] != first[i] {
						t.Fatalf("%s frame %d: members got different *transport.Message values (encoded more than once)", name, i)
					}
				}
			}
			return first[0]
		}
		if check("v1", v1) == check("v2", v2) {
			t.Fatal("v1 and v2 members got the same message")
		}
	}
}

func TestLeaveGrace(t *testing.T) {
	t.Parallel()
	// Long enough that a loaded CI machine (-race, parallel packages) does
	// not stall past it between a leave and the rejoin that follows.
	const grace = 500 * time.Millisecond
	b := memory.New()
	h := newHub(t, b, grace)
	m, _ := member(phoenix.V2)
	mustJoin(t, h, "t", m)
	h.Leave("t", m.Key)
	if got := h.Members("t"); got != 0 {
		t.Fatalf("Members = %d after leave", got)
	}
	if got := b.Subscriptions("t"); got != 1 {
		t.Fatalf("subscription dropped at once; want it kept for LeaveGrace")
	}

	// Rejoin within the grace: no new subscription, and the drop is off.
	m2, c2 := member(phoenix.V2)
	if !h.TryJoin("t", m2) {
		t.Fatal("TryJoin within the grace = false")
	}
	time.Sleep(grace + grace/2)
	if got := b.SubscribeCalls(); got != 1 {
		t.Fatalf("SubscribeCalls = %d, want 1", got)
	}
	if got := b.Subscriptions("t"); got != 1 {
		t.Fatalf("Subscriptions = %d after rejoin within grace, want 1", got)
	}
	b.Deliver(&broker.Message{Topic: "t", Event: "e"})
	if c2.Len() != 1 {
		t.Fatal("rejoined member not delivered to")
	}

	// Join with Join (not TryJoin) within the grace also reuses it.
	h.Leave("t", m2.Key)
	mustJoin(t, h, "t", m)
	time.Sleep(grace + grace/2)
	if got := b.SubscribeCalls(); got != 1 {
		t.Fatalf("SubscribeCalls = %d, want 1", got)
	}

	// Last leave and no rejoin: dropped after the grace, not before.
	start := time.Now()
	h.Leave("t", m.Key)
	waitFor(t, "subscription drop", func() bool { return b.Subscriptions("t") == 0 })
	if d := time.Since(start); d < grace {
		t.Fatalf("subscription dropped after %v, before LeaveGrace %v", d, grace)
	}
	if got := h.Stats().Channels; got != 0 {
		t.Fatalf("Stats().Channels = %d after drop", got)
	}
	if h.TryJoin("t", m) {
		t.Fatal("TryJoin after drop = true; the topic has no subscription")
	}
	mustJoin(t, h, "t", m)
	if got := b.SubscribeCalls(); got != 2 {
		t.Fatalf("SubscribeCalls = %d after rejoin past the grace, want 2", got)
	}
}

func TestLeaveUnknown(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Millisecond)
	h.Leave("nobody", "key")
	m, _ := member(phoenix.V2)
	mustJoin(t, h, "t", m)
	h.Leave("t", "other key")
	time.Sleep(20 * time.Millisecond)
	if h.Members("t") != 1 || b.Subscriptions("t") != 1 {
		t.Fatal("leave of an unknown key removed the member or the subscription")
	}
}

func TestConcurrentJoinLeave(t *testing.T) {
	t.Parallel()
	const (
		grace      = 5 * time.Millisecond
		goroutines = 32
		rounds     = 200
	)
	topics := []string{"a", "b", "c", "d"}
	b := memory.New()
	b.SubscribeDelay = 100 * time.Microsecond // widen the pending window
	h := newHub(t, b, grace)

	// A publisher keeps fan-out running against the joins and leaves.
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = b.Publish(context.Background(), topics[i%len(topics)], "e", []byte("{}"))
			time.Sleep(50 * time.Microsecond)
		}
	})

	// A few members stay for the whole run on one topic.
	var stayers []hub.Member
	for range 3 {
		m, _ := member(phoenix.V1)
		mustJoin(t, h, "a", m)
		stayers = append(stayers, m)
	}

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			v := phoenix.V1 + phoenix.Version(g%2)
			for range rounds {
				topic := topics[r.IntN(len(topics))]
				m, _ := member(v)
				switch r.IntN(3) {
				case 0:
					if !h.TryJoin(topic, m) {
						if err := h.Join(context.Background(), topic, m); err != nil {
							t.Errorf("Join: %v", err)
							return
						}
					}
				case 1:
					if err := h.Join(context.Background(), topic, m); err != nil {
						t.Errorf("Join: %v", err)
						return
					}
				case 2:
					// A join whose ctx ends at once: it may or may not be
					// joined, but must not be left behind on error.
					ctx, cancel := context.WithCancel(context.Background())
					cancel()
					if err := h.Join(ctx, topic, m); err != nil {
						continue
					}
				}
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(int(2 * grace))))
				}
				h.Leave(topic, m.Key)
			}
		})
	}
	wg.Wait()
	close(stop)
	pub.Wait()

	if got := h.Members("a"); got != len(stayers) {
		t.Fatalf("Members(a) = %d, want %d", got, len(stayers))
	}
	for _, topic := range topics[1:] {
		if got := h.Members(topic); got != 0 {
			t.Fatalf("Members(%s) = %d, want 0", topic, got)
		}
	}
	for _, m := range stayers {
		h.Leave("a", m.Key)
	}
	for _, topic := range topics {
		waitFor(t, "subscription drop of "+topic, func() bool { return b.Subscriptions(topic) == 0 })
	}
	waitFor(t, "Stats().Channels == 0", func() bool { return h.Stats().Channels == 0 })
}

func TestSubscribeFailure(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	boom := errors.New("bus down")
	b.SubscribeErr = boom
	m, c := member(phoenix.V2)
	if err := h.Join(context.Background(), "t", m); !errors.Is(err, boom) {
		t.Fatalf("Join = %v, want %v", err, boom)
	}
	if got := h.Members("t"); got != 0 {
		t.Fatalf("Members = %d after failed join", got)
	}
	if got := h.Stats().Channels; got != 0 {
		t.Fatalf("Stats().Channels = %d after failed join; channel left registered", got)
	}
	if h.TryJoin("t", m) {
		t.Fatal("TryJoin after failed subscribe = true")
	}

	b.SubscribeErr = nil
	mustJoin(t, h, "t", m)
	if got := b.SubscribeCalls(); got != 2 {
		t.Fatalf("SubscribeCalls = %d, want 2 (the later join retries)", got)
	}
	b.Deliver(&broker.Message{Topic: "t", Event: "e"})
	if c.Len() != 1 {
		t.Fatal("member of the retried join got nothing")
	}
}

func TestSubscribeFailureWithWaiters(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	boom := errors.New("bus down")
	b.SubscribeErr = boom
	b.SubscribeDelay = 50 * time.Millisecond
	var wg sync.WaitGroup
	for range 10 {
		m, _ := member(phoenix.V2)
		wg.Go(func() {
			if err := h.Join(context.Background(), "t", m); !errors.Is(err, boom) {
				t.Errorf("Join = %v, want %v", err, boom)
			}
		})
	}
	wg.Wait()
	if got := h.Members("t"); got != 0 {
		t.Fatalf("Members = %d after failed joins", got)
	}
	if got := h.Stats().Channels; got != 0 {
		t.Fatalf("Stats().Channels = %d after failed joins", got)
	}
}

// TestJoinCanceledWhileSubscribing: the first joiner's ctx ends while the
// broker is slow. Join must return ctx's error promptly and leave no member.
func TestJoinCanceledWhileSubscribing(t *testing.T) {
	t.Parallel()
	const delay = 500 * time.Millisecond
	b := memory.New()
	b.SubscribeDelay = delay
	h := newHub(t, b, 10*time.Millisecond)
	m, _ := member(phoenix.V2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.Join(ctx, "t", m)
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Join = %v, want context.DeadlineExceeded", err)
	}
	if elapsed >= delay/2 {
		t.Errorf("Join returned after %v; it waited for the subscribe instead of its ctx", elapsed)
	}
	waitFor(t, "no member left", func() bool { return h.Members("t") == 0 })
	waitFor(t, "subscription dropped", func() bool { return b.Subscriptions("t") == 0 && h.Stats().Channels == 0 })
}

// TestJoinCanceledWhileWaiting: a second joiner whose ctx ends while the
// first joiner is still subscribing.
func TestJoinCanceledWhileWaiting(t *testing.T) {
	t.Parallel()
	b := memory.New()
	b.SubscribeDelay = 200 * time.Millisecond
	h := newHub(t, b, time.Hour)
	first, c1 := member(phoenix.V2)
	done := make(chan error, 1)
	go func() { done <- h.Join(context.Background(), "t", first) }()
	// The channel exists (subscribing) before any member is attached:
	// members are attached only once the subscription is live.
	waitFor(t, "first joiner subscribing", func() bool { return h.Stats().Channels == 1 })

	second, c2 := member(phoenix.V2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.Join(ctx, "t", second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Join = %v, want context.DeadlineExceeded", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("first Join: %v", err)
	}
	if got := h.Members("t"); got != 1 {
		t.Fatalf("Members = %d after canceled join, want 1", got)
	}
	b.Deliver(&broker.Message{Topic: "t", Event: "e"})
	if c1.Len() != 1 || c2.Len() != 0 {
		t.Fatalf("deliveries: first %d, canceled %d; want 1 and 0", c1.Len(), c2.Len())
	}
}

// TestLeaveWhileSubscribing: every member leaves while the first subscribe
// is in flight; the subscription settles and is dropped after the grace.
func TestLeaveWhileSubscribing(t *testing.T) {
	t.Parallel()
	b := memory.New()
	b.SubscribeDelay = 50 * time.Millisecond
	h := newHub(t, b, 10*time.Millisecond)
	m, _ := member(phoenix.V2)
	done := make(chan error, 1)
	go func() { done <- h.Join(context.Background(), "t", m) }()
	waitFor(t, "joiner registered", func() bool { return h.Members("t") == 1 })
	h.Leave("t", m.Key)
	if err := <-done; err != nil {
		t.Fatalf("Join: %v", err)
	}
	if got := h.Members("t"); got != 0 {
		t.Fatalf("Members = %d, want 0", got)
	}
	waitFor(t, "subscription dropped", func() bool { return b.Subscriptions("t") == 0 && h.Stats().Channels == 0 })
}

func TestClosedMemberDoesNotStopDelivery(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	var conns []*transporttest.Conn
	for range 5 {
		m, c := member(phoenix.V2)
		mustJoin(t, h, "t", m)
		conns = append(conns, c)
	}
	conns[1].Close(transport.CloseSlowConsumer, "slow")
	conns[3].SetRefuse(true)
	for range 3 {
		b.Deliver(&broker.Message{Topic: "t", Event: "e", Payload: []byte("{}")})
	}
	for i, c := range conns {
		want := 3
		if i == 1 || i == 3 {
			want = 0
		}
		if got := c.Len(); got != want {
			t.Errorf("member %d got %d messages, want %d", i, got, want)
		}
	}
	if got := h.Stats().Delivered; got != 9 {
		t.Fatalf("Stats().Delivered = %d, want 9 (refused sends not counted)", got)
	}
}

func TestCloseDropsEverything(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, LeaveGrace: time.Hour})
	for _, topic := range []string{"a", "b", "c"} {
		m, _ := member(phoenix.V2)
		mustJoin(t, h, topic, m)
	}
	m, _ := member(phoenix.V2)
	mustJoin(t, h, "d", m)
	h.Leave("d", m.Key) // pending grace drop
	h.Close()
	for _, topic := range []string{"a", "b", "c", "d"} {
		if got := b.Subscriptions(topic); got != 0 {
			t.Errorf("Subscriptions(%s) = %d after Close", topic, got)
		}
	}
	if got := h.Stats().Channels; got != 0 {
		t.Fatalf("Stats().Channels = %d after Close", got)
	}
}

// slottedKey is a member key that keeps its own hub.Slot, as the
// session's join instances do.
type slottedKey struct{ slot hub.Slot }

func (k *slottedKey) MemberSlot() *hub.Slot { return &k.slot }

// Members are found by scanning while a channel is small and through an
// index from 16 on, or through the Slot their key keeps: joining past
// that point, leaving in random order and re-joining keeps exactly the
// current members receiving, whatever mix of keys the channel has.
func TestMembershipAcrossIndexThreshold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		slotted func(i int) bool
	}{
		{"plain", func(int) bool { return false }},
		{"slotted", func(int) bool { return true }},
		{"mixed", func(i int) bool { return i%3 != 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			membershipChurn(t, tc.slotted)
		})
	}
}

func membershipChurn(t *testing.T, slotted func(int) bool) {
	b := memory.New()
	h := newHub(t, b, time.Hour)
	type mc struct {
		m hub.Member
		c *transporttest.Conn
	}
	var all []mc
	for i := range 40 {
		m, c := member(phoenix.V2)
		if slotted(i) {
			m.Key = &slottedKey{}
		}
		mustJoin(t, h, "room:idx", m)
		mustJoin(t, h, "room:idx", m) // a duplicate key is one member
		all = append(all, mc{m, c})
	}
	if got := h.Members("room:idx"); got != 40 {
		t.Fatalf("%d members, want 40", got)
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	gone, kept := all[:30], all[30:]
	for _, x := range gone {
		h.Leave("room:idx", x.m.Key)
		h.Leave("room:idx", x.m.Key) // leaving twice is harmless
	}
	if got := h.Members("room:idx"); got != 10 {
		t.Fatalf("%d members after leaves, want 10", got)
	}
	back := gone[:5]
	for _, x := range back {
		mustJoin(t, h, "room:idx", x.m)
	}
	if got := h.Members("room:idx"); got != 15 {
		t.Fatalf("%d members after re-joins, want 15", got)
	}
	if _, err := b.Publish(context.Background(), "room:idx", "news", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, x := range append(append([]mc(nil), kept...), back...) {
		if got := x.c.WaitLen(1, wait); len(got) != 1 {
			t.Fatalf("a current member got %d messages", len(got))
		}
	}
	time.Sleep(20 * time.Millisecond)
	for _, x := range gone[5:] {
		if n := x.c.Len(); n != 0 {
			t.Fatalf("a member that left got %d messages", n)
		}
	}
	// Everyone leaves: the channel is empty, whichever way its members
	// were found.
	for _, x := range append(kept, back...) {
		h.Leave("room:idx", x.m.Key)
	}
	if got := h.Members("room:idx"); got != 0 {
		t.Fatalf("%d members after everyone left, want 0", got)
	}
}
