package natsbroker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// secondGateway is another broker on its own connection to the same
// server, as another gateway would be.
func (e henv) secondGateway(t *testing.T, ns natsbroker.Stream) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(natstest.Connect(t, e.srv), natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": ns}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return b
}

func recvReset(t *testing.T, ch <-chan *broker.Message) *broker.Message {
	t.Helper()
	for {
		m := recv(t, ch)
		if m.Reset {
			return m
		}
	}
}

func TestClearChannel(t *testing.T) {
	for _, allow := range []bool{false, true} {
		ns := natsbroker.Stream{AllowPurge: allow}
		e := setupHistory(t, ns)
		epoch := e.epoch(t)
		var lobby, other []uint64
		for i := 0; i < 5; i++ {
			lobby = append(lobby, e.jsPublish(t, "fabric.room.lobby", "m", `{}`))
			other = append(other, e.jsPublish(t, "fabric.room.other", "m", `{}`))
		}
		b2 := e.secondGateway(t, ns)
		sub1, ch1 := collect(t, e.env, "room:lobby")
		defer sub1.Unsubscribe()
		ch2 := make(chan *broker.Message, 100)
		sub2, err := b2.Subscribe(ctx(t), "room:lobby", func(m *broker.Message) { ch2 <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer sub2.Unsubscribe()
		subO, chO := collect(t, e.env, "room:other")
		defer subO.Unsubscribe()

		start := time.Now()
		if err := e.b.ClearChannel(ctx(t), "room:lobby"); err != nil {
			t.Fatalf("allow_purge %v: clear: %v", allow, err)
		}
		acked := time.Since(start)
		// Both gateways reset the channel (their rings go, their clients
		// rejoin) at or after the mark.
		r1 := recvReset(t, ch1)
		d1 := time.Since(start)
		r2 := recvReset(t, ch2)
		d2 := time.Since(start)
		t.Logf("allow_purge %v: clear acknowledged after %v; reset on gateway 1 after %v, gateway 2 after %v", allow, acked, d1, d2)
		if r1.Offset <= lobby[4] || r2.Offset != r1.Offset {
			t.Fatalf("reset positions %d %d, last cleared %d", r1.Offset, r2.Offset, lobby[4])
		}
		// Resuming across the clear: told, at every kind of position.
		for _, from := range []uint64{0, lobby[2], lobby[4], other[4]} {
			p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: from}, 100)
			if err != nil || p.Reason != broker.ReasonHistoryCleared || len(p.Messages) != 0 {
				t.Fatalf("resume from %d across the clear: %q %d %v", from, p.Reason, len(p.Messages), err)
			}
		}
		// From the position after the clear: recovered, with what follows.
		next := e.jsPublish(t, "fabric.room.lobby", "after", `{}`)
		p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: r1.Offset}, 100)
		if err != nil || p.Reason != "" || len(p.Messages) != 1 || p.Messages[0].Offset != next {
			t.Fatalf("resume after the clear: %+v %v", p, err)
		}
		if m := recv(t, ch1); m.Offset != next || m.Prev != r1.Offset {
			t.Fatalf("live after the clear: %+v", m)
		}
		// The other channel is untouched: no reset, full replay.
		select {
		case m := <-chO:
			t.Fatalf("other channel got %+v", m)
		default:
		}
		if p, err := e.b.Replay(ctx(t), "room:other", broker.Position{Epoch: epoch, Offset: other[0]}, 100); err != nil || p.Reason != "" || len(p.Messages) != 4 {
			t.Fatalf("other channel: %q %d %v", p.Reason, len(p.Messages), err)
		}
		// The bytes: refused by the deny setting (kept, never served), gone
		// where the namespace allows purges.
		st, _ := e.js.Stream(ctx(t), "FABRIC_room")
		_, err = st.GetMsg(ctx(t), lobby[0])
		if gone := errors.Is(err, jetstream.ErrMsgNotFound); gone != allow {
			t.Fatalf("allow_purge %v: cleared message physically gone = %v (%v)", allow, gone, err)
		}
		// Operators cannot purge around Fabric unless allowed.
		err = st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room.other"))
		if (err == nil) != allow {
			t.Fatalf("allow_purge %v: operator purge: %v", allow, err)
		}
	}
}

func TestRemoveMessage(t *testing.T) {
	for _, allow := range []bool{false, true} {
		ns := natsbroker.Stream{AllowDelete: allow}
		e := setupHistory(t, ns)
		epoch := e.epoch(t)
		var lobby []uint64
		for i := 0; i < 5; i++ {
			lobby = append(lobby, e.jsPublish(t, "fabric.room.lobby", "m", `{}`))
		}
		other := e.jsPublish(t, "fabric.room.other", "m", `{}`)
		sub, ch := collect(t, e.env, "room:lobby")
		defer sub.Unsubscribe()
		if err := e.b.RemoveMessage(ctx(t), "room:lobby", other); !errors.Is(err, natsbroker.ErrNoMessage) {
			t.Fatalf("removing another channel's message: %v", err)
		}
		if err := e.b.RemoveMessage(ctx(t), "chat:x", 1); !errors.Is(err, natsbroker.ErrNoHistory) {
			t.Fatalf("removing from an ephemeral namespace: %v", err)
		}
		if err := e.b.RemoveMessage(ctx(t), "room:lobby", lobby[2]); err != nil {
			t.Fatal(err)
		}
		r := recvReset(t, ch)
		if r.Offset <= lobby[4] {
			t.Fatalf("reset at %d", r.Offset)
		}
		// Replay skips it, from before it; the chain stays whole.
		for _, from := range []uint64{0, lobby[0], lobby[2]} {
			p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: from}, 100)
			if err != nil || p.Reason != "" {
				t.Fatalf("resume from %d: %q %v", from, p.Reason, err)
			}
			for _, m := range p.Messages {
				if m.Offset == lobby[2] {
					t.Fatalf("resume from %d: removed message replayed", from)
				}
			}
		}
		p, _ := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: lobby[1]}, 100)
		if len(p.Messages) != 2 || p.Messages[0].Offset != lobby[3] || p.Messages[0].Prev < lobby[1] || p.Messages[0].Prev > lobby[2] {
			t.Fatalf("after removal: %+v %+v (lobby %v)", *p.Messages[0], *p.Messages[1], lobby)
		}
		st, _ := e.js.Stream(ctx(t), "FABRIC_room")
		_, err := st.GetMsg(ctx(t), lobby[2])
		if gone := errors.Is(err, jetstream.ErrMsgNotFound); gone != allow {
			t.Fatalf("allow_delete %v: removed message physically gone = %v (%v)", allow, gone, err)
		}
		if err := st.DeleteMsg(ctx(t), lobby[0]); (err == nil) != allow {
			t.Fatalf("allow_delete %v: operator delete: %v", allow, err)
		}
	}
}

// The CLI's moderator finds the stream by name, from a plain connection.
func TestStandaloneModerator(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	epoch := e.epoch(t)
	s := e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	m, err := natsbroker.NewModerator(e.pub, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ClearChannel(ctx(t), "nostream:x"); !errors.Is(err, natsbroker.ErrNoHistory) {
		t.Fatalf("clear without a stream: %v", err)
	}
	if err := m.RemoveMessage(ctx(t), "room:lobby", s); err != nil {
		t.Fatal(err)
	}
	if err := m.ClearChannel(ctx(t), "room:lobby"); err != nil {
		t.Fatal(err)
	}
	p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch}, 10)
	if err != nil || p.Reason != broker.ReasonHistoryCleared {
		t.Fatalf("after a standalone clear: %q %v", p.Reason, err)
	}
}

// A mark whose republished copy a gateway missed (its NATS link was down)
// is applied when the gateway resyncs after the link came back.
func TestMissedMarkAppliedOnResync(t *testing.T) {
	e, ch := missedMark(t)
	e.b.Resync(ctx(t))
	if r := recvReset(t, ch); r.Offset < 2 {
		t.Fatalf("reset at %d, before the mark", r.Offset)
	}
}

// missedMark is a broker with a subscriber of room:lobby whose channel was
// cleared while the broker did not watch marks (as if its NATS link had
// been down): nothing was delivered; the subscriber's channel is returned.
func missedMark(t *testing.T) (henv, <-chan *broker.Message) {
	t.Helper()
	e := setupHistory(t, natsbroker.Stream{})
	e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	sub, ch := collect(t, e.env, "room:lobby")
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	e.b.StopWatchingMarks()
	m, err := natsbroker.NewModerator(e.pub, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ClearChannel(ctx(t), "room:lobby"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		t.Fatalf("delivered without the mark subscription: %+v", got)
	case <-time.After(100 * time.Millisecond):
	}
	return e, ch
}
