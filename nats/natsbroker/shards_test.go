package natsbroker_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// sameShard finds a topic "<ns>:<prefix><i>" whose subscription shares
// the dispatch shard of other.
func sameShard(t *testing.T, b *natsbroker.Broker, other, ns, prefix string) string {
	t.Helper()
	want := b.ShardOfTopic(other)
	for i := range 1000 {
		topic := fmt.Sprintf("%s:%s%d", ns, prefix, i)
		if b.ShardOfTopic(topic) == want {
			return topic
		}
	}
	t.Fatal("no topic found in the same shard")
	return ""
}

// blockShard subscribes topic with a handler that blocks on its first
// message until release is closed, and returns once it is blocked: the
// shard's goroutine then serves nobody else.
func blockShard(t *testing.T, e henv, topic, subj string) (release func()) {
	t.Helper()
	blocked := make(chan struct{}, 1)
	ch := make(chan struct{})
	sub, err := e.b.Subscribe(ctx(t), topic, func(*broker.Message) {
		select {
		case blocked <- struct{}{}:
		default:
		}
		<-ch
	})
	if err != nil {
		t.Fatal(err)
	}
	e.jsPublishOrCore(t, topic, subj)
	select {
	case <-blocked:
	case <-time.After(wait):
		t.Fatal("blocking handler never ran")
	}
	return func() {
		close(ch)
		_ = sub.Unsubscribe()
	}
}

func (e henv) jsPublishOrCore(t *testing.T, topic, subj string) {
	t.Helper()
	if strings.HasPrefix(topic, "room:") { // setupHistory's one persistent namespace
		e.jsPublish(t, subj, "m", `{}`)
		return
	}
	if err := e.pub.Publish(subj, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}

// TestFullShardPersistentRefilled: a shard's queue overflows because
// another channel's handler blocks; the persistent channel that lost
// messages gets every one of them from the stream, in order, once, with
// an unbroken Prev chain.
func TestFullShardPersistentRefilled(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{}, func(c *natsbroker.Config) {
		c.PendingMsgsLimit = 4
	})
	victim := sameShard(t, e.b, "room:blocker", "room", "v")
	got := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), victim, func(m *broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	head := sub.(broker.HeadSubscription).Head().Offset
	release := blockShard(t, e, "room:blocker", "fabric.room.blocker")
	const n = 30
	var seqs []uint64
	for i := range n {
		seqs = append(seqs, e.jsPublish(t, "fabric.room."+victim[len("room:"):], "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// Every live copy has reached the client library (and most were
	// dropped there) before the shard runs again.
	if err := e.nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
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

// TestFullShardEphemeralCounted: the same overflow on an ephemeral channel
// loses the messages (core NATS) and counts every one.
func TestFullShardEphemeralCounted(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{}, func(c *natsbroker.Config) {
		c.PendingMsgsLimit = 4
	})
	victim := sameShard(t, e.b, "room:blocker", "bench", "v")
	got := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), victim, func(m *broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	release := blockShard(t, e, "room:blocker", "fabric.room.blocker")
	const n = 30
	for range n {
		if err := e.pub.Publish("fabric.bench."+victim[len("bench:"):], []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.pub.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	release()
	// Drops are counted when the subscription's next message is handled:
	// publish a marker until one arrives; by then every drop is counted.
	subj := "fabric.bench." + victim[len("bench:"):]
	published, received := n, 0
	deadline := time.Now().Add(wait)
	for settled := false; !settled; {
		if time.Now().After(deadline) {
			t.Fatal("no marker message arrived")
		}
		if err := e.pub.Publish(subj, []byte(`{"marker":true}`)); err != nil {
			t.Fatal(err)
		}
		published++
		for drained := false; !drained; {
			select {
			case m := <-got:
				received++
				settled = settled || string(m.Payload) == `{"marker":true}`
			case <-time.After(100 * time.Millisecond):
				drained = true
			}
		}
	}
	drops := int(e.b.SlowConsumerDrops())
	if drops == 0 {
		t.Fatal("the shard never overflowed; the test proves nothing")
	}
	if received+drops != published {
		t.Fatalf("received %d + dropped %d != published %d", received, drops, published)
	}
}

// TestNoGoroutinePerChannel: subscribing 1,000 channels, persistent and
// ephemeral, with their presence subjects, starts no goroutine per
// channel (the dispatch shards and the presence bus have a fixed number).
func TestNoGoroutinePerChannel(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	// One channel of each kind first, so goroutines started once per
	// broker or namespace exist before the count.
	var subs []broker.Subscription
	subscribe := func(topic string) {
		s, err := e.b.Subscribe(ctx(t), topic, func(*broker.Message) {})
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.b.PresenceSubscribe(ctx(t), topic, func([]byte, func([]byte) error) {})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s, p)
	}
	subscribe("room:warm")
	subscribe("bench:warm")
	before := runtime.NumGoroutine()
	const n = 1000
	for i := range n / 2 {
		subscribe(fmt.Sprintf("room:u%d", i))
		subscribe(fmt.Sprintf("bench:u%d", i))
	}
	after := runtime.NumGoroutine()
	// Up to every dispatch shard newly started, and a little slack for
	// the test's own helpers; a goroutine per channel would be 1,000+.
	if grown := after - before; grown > 20 {
		t.Fatalf("goroutines grew by %d for %d channels (%d -> %d)", grown, n, before, after)
	}
	for _, s := range subs {
		if err := s.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
}
