package natsbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

func presenceBroker(t *testing.T, nc *nats.Conn) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(nc, natsbroker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// answering subscribes topic's presence with a handler that answers every
// request with answer.
func answering(t *testing.T, b *natsbroker.Broker, topic, answer string) {
	t.Helper()
	sub, err := b.PresenceSubscribe(ctx(t), topic, func(_ []byte, reply func([]byte) error) {
		if reply != nil {
			_ = reply([]byte(answer))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// request collects the answers to one state request and how long it took.
func request(t *testing.T, b *natsbroker.Broker, topic string, window time.Duration) (map[string]bool, time.Duration) {
	t.Helper()
	got := map[string]bool{}
	start := time.Now()
	if err := b.PresenceRequest(context.Background(), topic, []byte("sync"), window, func(a []byte) bool {
		got[string(a)] = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return got, time.Since(start)
}

// A gateway alone on the presence bus answers its own state requests
// without waiting the window; once a second gateway started, requests go
// to both, whichever started first.
func TestPresenceRequestSkippedWhenAlone(t *testing.T) {
	s := natstest.RunServer(t)
	a := presenceBroker(t, natstest.Connect(t, s))
	answering(t, a, "room:x", "from a")
	const window = 20 * time.Second
	got, took := request(t, a, "room:x", window)
	if !got["from a"] || len(got) != 1 {
		t.Fatalf("alone: answers %v", got)
	}
	if took >= window/2 {
		t.Fatalf("alone: the request waited %v of its %v window", took, window)
	}

	b := presenceBroker(t, natstest.Connect(t, s))
	answering(t, b, "room:x", "from b")
	// a learnt of b from b's hello, b of a from a's answer: both ask the
	// bus now (and wait out a short window).
	for _, c := range []struct {
		name string
		br   *natsbroker.Broker
	}{{"first", a}, {"second", b}} {
		got, _ := request(t, c.br, "room:x", 2*time.Second)
		if !got["from a"] || !got["from b"] {
			t.Fatalf("%s gateway's request: answers %v, want both", c.name, got)
		}
	}
}

// Presence traffic from a gateway that never said hello (an older one:
// no sender header) makes it known too.
func TestPresencePeerHeardByTraffic(t *testing.T) {
	s := natstest.RunServer(t)
	a := presenceBroker(t, natstest.Connect(t, s))
	answering(t, a, "room:x", "from a")
	old := natstest.Connect(t, s)
	sub, err := old.Subscribe("fabric_presence.room.x", func(m *nats.Msg) {
		if m.Reply != "" {
			_ = old.Publish(m.Reply, []byte("from old"))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := old.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	if got, _ := request(t, a, "room:x", time.Second); got["from old"] {
		t.Fatalf("answers %v before the old gateway said anything: the test proves nothing", got)
	}
	// A heartbeat of the old gateway on another channel of the namespace.
	heard := make(chan struct{}, 1)
	hb, err := a.PresenceSubscribe(ctx(t), "room:y", func([]byte, func([]byte) error) {
		select {
		case heard <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Unsubscribe()
	if err := old.Publish("fabric_presence.room.y", []byte(`{"t":"hb"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-heard:
	case <-time.After(wait):
		t.Fatal("heartbeat not delivered")
	}
	if got, _ := request(t, a, "room:x", 2*time.Second); !got["from old"] || !got["from a"] {
		t.Fatalf("answers %v, want the old gateway's and a's", got)
	}
}

// After the link came back (Resync), a gateway that was alone asks the
// bus again: others may have come and spoken while it was away.
func TestPresenceRequestAfterResync(t *testing.T) {
	s := natstest.RunServer(t)
	a := presenceBroker(t, natstest.Connect(t, s))
	answering(t, a, "room:x", "from a")
	other := natstest.Connect(t, s)
	sub, err := other.Subscribe("fabric_presence.room.x", func(m *nats.Msg) {
		if m.Reply != "" {
			_ = other.Publish(m.Reply, []byte("from other"))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := other.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	if got, _ := request(t, a, "room:x", time.Second); got["from other"] {
		t.Fatalf("answers %v while alone: the test proves nothing", got)
	}
	a.Resync(ctx(t))
	if got, _ := request(t, a, "room:x", 2*time.Second); !got["from other"] {
		t.Fatalf("answers %v after Resync, want the other gateway's", got)
	}
}

var _ broker.Presence = (*natsbroker.Broker)(nil)
