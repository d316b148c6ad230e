package session_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// awayBroker is a memory broker whose bus can be stuck (Publish waits,
// ignoring its context, as nats.go does behind its connection lock) or
// known to be away (broker.Health).
type awayBroker struct {
	*memory.Broker
	stuck   chan struct{} // Publish waits until it is closed, when set
	away    atomic.Bool
	entered atomic.Int32
}

func (b *awayBroker) Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error) {
	if err := b.Available(topic); err != nil {
		return 0, err
	}
	if b.stuck != nil {
		b.entered.Add(1)
		<-b.stuck
	}
	return b.Broker.Publish(ctx, topic, event, payload)
}

func (b *awayBroker) Available(string) error {
	if b.away.Load() {
		return fmt.Errorf("%w: test", broker.ErrUnavailable)
	}
	return nil
}

func awayEnv(t *testing.T, b *awayBroker, publishTimeout time.Duration) *env {
	h := hub.New(hub.Config{Broker: b, LeaveGrace: 10 * time.Millisecond})
	t.Cleanup(h.Close)
	cfg := &session.Config{Hub: h, Broker: b, PublishTimeout: publishTimeout}
	cfg.SetDefaults()
	e := &env{v: phoenix.V2, b: b.Broker, h: h, cfg: cfg, conn: transporttest.NewConn()}
	e.s = session.New(cfg, e.conn, e.v, nil)
	return e
}

// Every push gets an answer within the publish timeout of its arrival,
// including those queued behind one stuck on the bus beyond its context.
func TestPushesAnsweredWhileBusStuck(t *testing.T) {
	b := &awayBroker{Broker: memory.New(), stuck: make(chan struct{})}
	defer close(b.stuck)
	const timeout = 200 * time.Millisecond
	e := awayEnv(t, b, timeout)
	e.join(t, "1", "room:1")
	start := time.Now()
	for i := range 3 {
		e.send(e.msg("1", fmt.Sprint(10+i), "room:1", "new_msg", `{}`))
	}
	// Each push's watchdog answers it: in any order.
	got := e.conn.WaitLen(4, wait)
	want := map[string]bool{}
	for i := range 3 {
		want[e.errReply("1", fmt.Sprint(10+i), "room:1", session.ReasonTimeout)] = true
	}
	for _, m := range got[1:] {
		if !want[string(m.Data)] {
			t.Fatalf("unexpected %s", m.Data)
		}
		delete(want, string(m.Data))
	}
	if len(want) > 0 {
		t.Fatalf("no answer: %v", want)
	}
	if d := time.Since(start); d > 10*timeout {
		t.Errorf("answered after %v, PublishTimeout %v", d, timeout)
	}
	if n := b.entered.Load(); n != 1 {
		t.Errorf("%d pushes reached the stuck bus, want 1 (the others timed out queued, never sent)", n)
	}
}

// While the bus is known to be away, a join that needs it and a push are
// answered at once, not after their timeouts; a join of a channel live
// here still succeeds.
func TestBusKnownAway(t *testing.T) {
	b := &awayBroker{Broker: memory.New()}
	e := awayEnv(t, b, time.Minute)
	e.cfg.JoinTimeout = time.Minute
	e.join(t, "1", "room:live")
	b.away.Store(true)
	start := time.Now()
	e.send(e.msg("2", "2", "room:new", "phx_join", `{}`))
	e.expect(t, e.errReply("2", "2", "room:new", session.ReasonUnavailable))
	e.send(e.msg("1", "3", "room:live", "new_msg", `{}`))
	e.expect(t, e.errReply("1", "3", "room:live", session.ReasonPublishFailed))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answered after %v with the bus known away", d)
	}
	if len(b.Published()) != 0 {
		t.Errorf("published %d while away", len(b.Published()))
	}
	if !errors.Is(b.Available(""), broker.ErrUnavailable) {
		t.Fatal("test broker not away")
	}
}
