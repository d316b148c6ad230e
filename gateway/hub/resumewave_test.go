package hub_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// waveBroker is a memory broker whose every topic is persistent, whose
// subscriptions report a head, and whose Replay serves msgs slowly (a
// stream read takes a while) and counts its calls.
type waveBroker struct {
	*memory.Broker
	head  broker.Position
	msgs  []*broker.Message
	calls atomic.Int32
}

type headSub struct {
	broker.Subscription
	head broker.Position
}

func (s headSub) Head() broker.Position { return s.head }

func (b *waveBroker) Subscribe(ctx context.Context, topic string, h broker.Handler) (broker.Subscription, error) {
	sub, err := b.Broker.Subscribe(ctx, topic, h)
	if err != nil {
		return nil, err
	}
	return headSub{sub, b.head}, nil
}

func (b *waveBroker) Replay(ctx context.Context, topic string, from broker.Position, limit int) (broker.Page, error) {
	b.calls.Add(1)
	time.Sleep(20 * time.Millisecond)
	var p broker.Page
	for _, m := range b.msgs {
		if m.Offset > from.Offset && len(p.Messages) < limit {
			p.Messages = append(p.Messages, m)
		}
	}
	p.Done = len(p.Messages) == 0 || p.Messages[len(p.Messages)-1].Offset == b.head.Offset
	return p, nil
}

// A reconnect wave into a channel this gateway does not hold yet (its
// ring is empty): the resumes share the first one's fetch instead of
// each reading the stream (which ran past the join timeout with 10,000
// clients), and every one still gets exactly what it missed.
func TestResumeWaveSharesOneFetch(t *testing.T) {
	t.Parallel()
	const missed, n = 100, 50
	b := &waveBroker{Broker: memory.New(), head: broker.Position{Epoch: "e", Offset: missed}}
	for i := uint64(1); i <= missed; i++ {
		b.msgs = append(b.msgs, &broker.Message{Topic: "room:1", Event: "e", Payload: []byte(`{}`), Offset: i, Prev: i - 1})
	}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour})
	t.Cleanup(h.Close)
	var wg sync.WaitGroup
	results := make([]*listener, n)
	errs := make([]error, n)
	members := make([]hub.Member, n)
	for i := range n {
		m, _ := member(phoenix.V2)
		results[i] = &listener{}
		m.Key = results[i]
		m.Resume = &broker.Position{Epoch: "e", Offset: 0}
		members[i] = m
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs[i] = h.Join(ctx, "room:1", members[i])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !results[i].got.Recovered {
			t.Fatalf("member %d: %v, %+v", i, errs[i], results[i].got)
		}
		if got := len(members[i].Conn.(*transporttest.Conn).Sent()); got != missed {
			t.Fatalf("member %d got %d messages, want %d", i, got, missed)
		}
	}
	if c := b.calls.Load(); c > 2 {
		t.Fatalf("%d stream reads for %d resumes of the same position, want 1 (2 at most)", c, n)
	}
	// Each missed message was encoded once: every resume was handed the
	// same message (so the same framed bytes, built once by the
	// transport), not a copy of its own.
	first := members[0].Conn.(*transporttest.Conn).Sent()
	for i := 1; i < n; i++ {
		for k, m := range members[i].Conn.(*transporttest.Conn).Sent() {
			if m != first[k] {
				t.Fatalf("member %d, message %d: encoded again for this member, not shared", i, k+1)
			}
		}
	}
}
