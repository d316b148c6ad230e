package natsbroker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/brokertest"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// feedLog records what one channel's handler got.
type feedLog struct {
	mu   sync.Mutex
	head uint64
	msgs []*broker.Message
}

func (f *feedLog) add(m *broker.Message) {
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
}

func (f *feedLog) snapshot() []*broker.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*broker.Message(nil), f.msgs...)
}

// feeds subscribes topics on b, each with its own log.
type feeds struct {
	t    *testing.T
	b    *natsbroker.Broker
	logs map[string]*feedLog
	subs map[string]broker.Subscription
}

func newFeeds(t *testing.T, b *natsbroker.Broker) *feeds {
	f := &feeds{t: t, b: b, logs: map[string]*feedLog{}, subs: map[string]broker.Subscription{}}
	t.Cleanup(func() {
		for _, s := range f.subs {
			_ = s.Unsubscribe()
		}
	})
	return f
}

func (f *feeds) join(topic string) {
	f.t.Helper()
	l := &feedLog{}
	sub, err := f.b.Subscribe(ctx(f.t), topic, l.add)
	if err != nil {
		f.t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	l.head = sub.(broker.HeadSubscription).Head().Offset
	f.logs[topic], f.subs[topic] = l, sub
}

func (f *feeds) leave(topic string) {
	f.t.Helper()
	if err := f.subs[topic].Unsubscribe(); err != nil {
		f.t.Fatal(err)
	}
	delete(f.subs, topic)
	delete(f.logs, topic)
}

// published records the stream sequences acknowledged per topic, in
// publish order (one publisher per topic, so that is the stream's order).
type published struct {
	mu   sync.Mutex
	seqs map[string][]uint64
	wg   sync.WaitGroup
}

// publishLoop publishes to the topics round robin, 4 goroutines each
// owning a quarter of them, until stop is closed (at most 500 messages a
// goroutine); wait returns once they all ended.
func publishLoop(t *testing.T, js jetstream.JetStream, topics []string, stop <-chan struct{}) *published {
	p := &published{seqs: map[string][]uint64{}}
	const groups = 4
	for g := range groups {
		var own []string
		for j := g; j < len(topics); j += groups {
			own = append(own, topics[j])
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for i := range 500 {
				select {
				case <-stop:
					return
				default:
				}
				topic := own[i%len(own)]
				c, cancel := context.WithTimeout(context.Background(), wait)
				ack, err := js.Publish(c, "fabric.room."+topic[len("room:"):], []byte(fmt.Sprintf(`{"i":%d}`, i)))
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				p.mu.Lock()
				p.seqs[topic] = append(p.seqs[topic], ack.Sequence)
				p.mu.Unlock()
			}
		}()
	}
	t.Cleanup(p.wg.Wait)
	return p
}

func (p *published) wait() { p.wg.Wait() }

func topicsN(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("room:%s%d", prefix, i)
	}
	return out
}

// exact waits until every feed has got every message published after its
// head, then requires exactly those: once each, in order, an unbroken
// Prev chain, no Reset.
func (f *feeds) exact(p *published) {
	f.t.Helper()
	deadline := time.Now().Add(4 * wait)
	for topic, l := range f.logs {
		p.mu.Lock()
		var want []uint64
		for _, s := range p.seqs[topic] {
			if s > l.head {
				want = append(want, s)
			}
		}
		p.mu.Unlock()
		var got []*broker.Message
		for {
			got = l.snapshot()
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // a duplicate would arrive now
		got = l.snapshot()
		if len(got) != len(want) {
			f.t.Fatalf("%s: got %d messages, want %d", topic, len(got), len(want))
		}
		prev := l.head
		for i, m := range got {
			if m.Reset || m.Offset != want[i] || m.Prev != prev {
				f.t.Fatalf("%s message %d: reset %v offset %d prev %d (want offset %d prev %d)", topic, i, m.Reset, m.Offset, m.Prev, want[i], prev)
			}
			prev = m.Offset
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(4 * wait); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for " + what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wildcardOn(e henv) func() bool {
	return func() bool { return e.b.WildcardNamespaces() == 1 && !e.b.LiveSwitching("room") }
}

func wildcardOff(e henv) func() bool {
	return func() bool { return e.b.WildcardNamespaces() == 0 && !e.b.LiveSwitching("room") }
}

// TestWildcardHandoverExact: channels crossing the threshold while
// messages are published to all of them switch the namespace to one
// wildcard subscription; every channel gets every message once, in order;
// channels joined after the switch get theirs with no subscription of
// their own; falling below the lower threshold switches back, exactly
// too.
func TestWildcardHandoverExact(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	e.b.SetLiveThresholds("room", 20, 8)
	topics := topicsN(32, "u")
	f := newFeeds(t, e.b)
	for _, topic := range topics[:16] {
		f.join(topic)
	}
	if e.b.WildcardNamespaces() != 0 || e.b.OwnLiveSubscriptions("room") != 16 {
		t.Fatal("below the threshold the channels must have their own subscriptions")
	}
	stop := make(chan struct{})
	p := publishLoop(t, e.js, topics, stop)
	for _, topic := range topics[16:24] { // crosses 20 while publishing
		f.join(topic)
	}
	waitFor(t, "the switch to the wildcard", wildcardOn(e))
	for _, topic := range topics[24:] { // joined in wildcard mode
		f.join(topic)
	}
	if n := e.b.OwnLiveSubscriptions("room"); n != 0 {
		t.Fatalf("%d channels still have their own subscription in wildcard mode", n)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	p.wait()
	f.exact(p)
	// A channel joined in wildcard mode resumes from history as any
	// other: replay from its head gives what the live feed gave.
	late := topics[30]
	head := f.subs[late].(broker.HeadSubscription).Head()
	page, err := e.b.Replay(ctx(t), late, head, 1000)
	if err != nil {
		t.Fatal(err)
	}
	live := f.logs[late].snapshot()
	if len(live) == 0 || len(page.Messages) != len(live) {
		t.Fatalf("%s: replay gave %d messages, live %d", late, len(page.Messages), len(live))
	}
	for i, m := range page.Messages {
		if m.Offset != live[i].Offset {
			t.Fatalf("%s: replay message %d at %d, live at %d", late, i, m.Offset, live[i].Offset)
		}
	}

	for _, l := range f.logs {
		l.mu.Lock()
		if n := len(l.msgs); n > 0 {
			l.head = l.msgs[n-1].Offset // phase two starts where phase one ended
		}
		l.msgs = nil
		l.mu.Unlock()
	}
	// Back: every channel is still in the stream's order, including those
	// joined in wildcard mode, while the publishers go on.
	stop = make(chan struct{})
	p = publishLoop(t, e.js, topics[:4], stop)
	for _, topic := range topics[4:] { // 4 left < 8: back to channels
		f.leave(topic)
	}
	waitFor(t, "the switch back to channels", wildcardOff(e))
	if n := e.b.OwnLiveSubscriptions("room"); n != 4 {
		t.Fatalf("%d own subscriptions after switching back, want 4", n)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	p.wait()
	f.exact(p)
	for _, topic := range topics[:4] {
		if len(f.logs[topic].snapshot()) == 0 {
			t.Fatalf("%s got nothing in phase two: the test proves nothing", topic)
		}
	}
}

// TestWildcardTwoGateways: one gateway in wildcard mode, one with a
// subscription per channel, serving the same channels: both deliver every
// message once, in order; the wildcard gateway drops the messages of
// channels it does not serve.
func TestWildcardTwoGateways(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{Live: natsbroker.LiveNamespace})
	nc2 := natstest.Connect(t, e.srv)
	b2, err := natsbroker.New(nc2, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {Live: natsbroker.LiveChannel}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	if err := b2.EnsureStreams(ctx(t)); err != nil {
		t.Fatal(err)
	}
	topics := topicsN(8, "g")
	f1, f2 := newFeeds(t, e.b), newFeeds(t, b2)
	for _, topic := range topics {
		f1.join(topic)
		f2.join(topic)
	}
	waitFor(t, "the wildcard", wildcardOn(e))
	f2.join("room:only-on-two") // its messages reach gateway one's wildcard too
	stop := make(chan struct{})
	p := publishLoop(t, e.js, append(topics, "room:only-on-two", "room:nobody", "room:nobody2", "room:nobody3"), stop)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	p.wait()
	f1.exact(p)
	f2.exact(p)
	if b2.WildcardNamespaces() != 0 || e.b.OwnLiveSubscriptions("room") != 0 || b2.OwnLiveSubscriptions("room") != 9 {
		t.Fatal("the modes are not what the config says")
	}
}

// TestWildcardSlowConsumerRefilled: in wildcard mode a shard's queue
// overflows because another channel's handler blocks; the messages the
// wildcard could not queue are counted and refilled from the stream, in
// order, once.
func TestWildcardSlowConsumerRefilled(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{Live: natsbroker.LiveNamespace}, func(c *natsbroker.Config) {
		c.PendingMsgsLimit = 4
	})
	victim := sameShard(t, e.b, "room:blocker", "room", "v")
	got := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), victim, func(m *broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	waitFor(t, "the wildcard", wildcardOn(e))
	head := sub.(broker.HeadSubscription).Head().Offset
	release := blockShard(t, e, "room:blocker", "fabric.room.blocker")
	const n = 30
	var seqs []uint64
	for i := range n {
		seqs = append(seqs, e.jsPublish(t, "fabric.room."+victim[len("room:"):], "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	if err := e.nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the forwarder has met the full shard
	release()
	recvChain(t, got, head, seqs[:n])
	select {
	case m := <-got:
		t.Fatalf("duplicate or extra message %+v", m)
	case <-time.After(300 * time.Millisecond):
	}
	if e.b.SlowConsumerDrops() == 0 {
		t.Fatal("the shard never overflowed; the test proves nothing")
	}
}

// TestConformanceWildcard runs the port's contract with every persistent
// channel fed by the namespace's wildcard.
func TestConformanceWildcard(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Env {
		e := setupHistory(t, natsbroker.Stream{AllowPurge: true, Live: natsbroker.LiveNamespace})
		return brokertest.Env{
			Broker:     e.b,
			Ephemeral:  "chat",
			Persistent: "room",
			Pushes:     "rpc",
			Presence:   "presence",
			Purge: func(t *testing.T, topic string) {
				st, err := e.js.Stream(ctx(t), "FABRIC_room")
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room."+topic[len("room:"):])); err != nil {
					t.Fatal(err)
				}
			},
			Recreate: func(t *testing.T) {
				if err := e.js.DeleteStream(ctx(t), "FABRIC_room"); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

// TestLiveModes: auto switches at WildcardThreshold and back at a
// quarter of it; channel never; namespace from the first channel and
// never back.
func TestLiveModes(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{
		"a": {}, "b": {Live: natsbroker.LiveAuto}, "c": {Live: natsbroker.LiveChannel}, "d": {Live: natsbroker.LiveNamespace}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	for ns, want := range map[string][2]int{
		"a": {natsbroker.WildcardThreshold, natsbroker.WildcardThreshold / 4},
		"b": {natsbroker.WildcardThreshold, natsbroker.WildcardThreshold / 4},
		"c": {-1, -1}, "d": {0, -1},
	} {
		if up, down := b.LiveThresholds(ns); up != want[0] || down != want[1] {
			t.Errorf("%s: thresholds %d/%d, want %d/%d", ns, up, down, want[0], want[1])
		}
	}
}

func TestLiveModeValidated(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	_, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {Live: "wildcard"}}})
	if err == nil || !strings.Contains(err.Error(), "live subscription") {
		t.Fatalf("New with live %q: %v", "wildcard", err)
	}
}

// TestWildcardHandoverKeepsQueued: messages a channel's own subscription
// queued before the switch (its shard busy with another channel) are still
// delivered after the subscription is dropped: the switch waits for the
// shards to handle what they hold. Nothing else would bring them back
// (no successor to reveal the gap, no drop counted).
func TestWildcardHandoverKeepsQueued(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	e.b.SetLiveThresholds("room", 2, -1)
	// An ephemeral channel blocks the shard: a feed of the namespace
	// would hold up the switch itself (it waits for each feed's handler).
	victim := sameShard(t, e.b, "chat:blocker", "room", "v")
	got := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), victim, func(m *broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	other, err := e.b.Subscribe(ctx(t), "room:other", func(*broker.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Unsubscribe()
	head := sub.(broker.HeadSubscription).Head().Offset
	release := blockShard(t, e, "chat:blocker", "fabric.chat.blocker")
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, e.jsPublish(t, "fabric.room."+victim[len("room:"):], "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	if err := e.nc.FlushTimeout(wait); err != nil { // queued behind the blocker
		t.Fatal(err)
	}
	third, err := e.b.Subscribe(ctx(t), "room:third", func(*broker.Message) {}) // 3 > 2: switch
	if err != nil {
		t.Fatal(err)
	}
	defer third.Unsubscribe()
	waitFor(t, "the switch to begin", func() bool { return e.b.WildcardNamespaces() == 1 })
	time.Sleep(200 * time.Millisecond) // the victim's subscription is dropped meanwhile
	if len(got) != 0 {
		t.Fatalf("%d messages delivered while their shard was blocked", len(got))
	}
	release()
	waitFor(t, "the switch to end", wildcardOn(e))
	recvChain(t, got, head, seqs[:3])
	if n := e.b.OwnLiveSubscriptions("room"); n != 0 {
		t.Fatalf("%d own subscriptions left", n)
	}
}

// TestChannelHandoverKeepsQueued: the same on the way back: what the
// wildcard queued before its channels were subscribed again is delivered
// after the wildcard is dropped.
func TestChannelHandoverKeepsQueued(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	e.b.SetLiveThresholds("room", 2, 2)
	victim := sameShard(t, e.b, "chat:blocker", "room", "v")
	got := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), victim, func(m *broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var others []broker.Subscription
	for i := range 2 { // 3 > 2: the wildcard
		o, err := e.b.Subscribe(ctx(t), fmt.Sprintf("room:other%d", i), func(*broker.Message) {})
		if err != nil {
			t.Fatal(err)
		}
		others = append(others, o)
	}
	waitFor(t, "the wildcard", wildcardOn(e))
	head := sub.(broker.HeadSubscription).Head().Offset
	release := blockShard(t, e, "chat:blocker", "fabric.chat.blocker")
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, e.jsPublish(t, "fabric.room."+victim[len("room:"):], "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	if err := e.nc.FlushTimeout(wait); err != nil { // queued behind the blocker
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the forwarder queued them
	for _, o := range others {        // 1 < 2: back to channels
		if err := o.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the switch back to begin", func() bool { return e.b.WildcardNamespaces() == 0 })
	time.Sleep(200 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("%d messages delivered while their shard was blocked", len(got))
	}
	release()
	waitFor(t, "the switch back to end", wildcardOff(e))
	recvChain(t, got, head, seqs[:3])
	if n := e.b.OwnLiveSubscriptions("room"); n != 1 {
		t.Fatalf("%d own subscriptions, want 1", n)
	}
}
