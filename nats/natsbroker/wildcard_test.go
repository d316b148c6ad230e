package natsbroker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
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
