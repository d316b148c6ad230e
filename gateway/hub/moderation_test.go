package hub_test

import (
	"bytes"
	"context"
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

// resetListener records a member's join results and resets.
type resetListener struct {
	mu     sync.Mutex
	got    hub.JoinResult
	resets int
}

func (l *resetListener) JoinReply(r hub.JoinResult) (*transport.Message, bool) {
	l.mu.Lock()
	l.got = r
	l.mu.Unlock()
	return nil, true
}
func (l *resetListener) Reset() { l.mu.Lock(); l.resets++; l.mu.Unlock() }
func (l *resetListener) state() (hub.JoinResult, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got, l.resets
}

// Moderation through the hub, with the memory broker's modelled stream:
// a clear resets every member and no resume across it is served from the
// ring; a removed message is never sent again, from the ring or replay.
func TestModerationReachesRingAndMembers(t *testing.T) {
	t.Parallel()
	b := memory.NewHistory("room")
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour})
	t.Cleanup(h.Close)
	ctx := context.Background()
	join := func(resume *broker.Position) (*resetListener, *transporttest.Conn) {
		t.Helper()
		c := transporttest.NewConn()
		l := &resetListener{}
		mustJoin(t, h, "room:x", hub.Member{Conn: c, Version: phoenix.V2, Key: l, Resume: resume})
		return l, c
	}
	a, ac := join(nil)
	var offs []uint64
	for _, body := range []string{`{"i":0}`, `{"i":1}`, `{"i":2}`} {
		off, err := b.Publish(ctx, "room:x", "m", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	ac.WaitLen(3, wait)
	epoch := b.Stream("room").Epoch()
	// From the ring: recovered.
	r, rc := join(&broker.Position{Epoch: epoch, Offset: offs[0]})
	if got, _ := r.state(); !got.Recovered || len(rc.WaitLen(2, wait)) != 2 {
		t.Fatalf("ring resume: %+v", got)
	}

	if err := b.ClearChannel(ctx, "room:x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "members reset", func() bool {
		_, ra := a.state()
		_, rr := r.state()
		return ra == 1 && rr == 1
	})
	for _, from := range []uint64{offs[0], offs[2]} {
		l, c := join(&broker.Position{Epoch: epoch, Offset: from})
		if got, _ := l.state(); got.Recovered || got.Reason != broker.ReasonHistoryCleared {
			t.Fatalf("resume from %d across the clear: %+v", from, got)
		}
		if n := c.Len(); n != 0 {
			t.Fatalf("resume from %d across the clear: %d frames sent", from, n)
		}
	}

	// Removal: never sent again, from the ring or replay.
	x, _ := b.Publish(ctx, "room:x", "m", []byte(`{"i":"x"}`))
	if _, err := b.Publish(ctx, "room:x", "m", []byte(`{"i":"y"}`)); err != nil {
		t.Fatal(err)
	}
	l, c := join(&broker.Position{Epoch: epoch, Offset: x - 1})
	c.WaitLen(2, wait) // the ring has both
	if err := b.RemoveMessage(ctx, "room:x", x); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "member reset", func() bool { _, n := l.state(); return n == 1 })
	l, c = join(&broker.Position{Epoch: epoch, Offset: x - 1})
	got, _ := l.state()
	sent := c.WaitLen(1, wait)
	if !got.Recovered || len(sent) != 1 || !bytes.Contains(sent[0].Bytes(), []byte(`"y"`)) {
		t.Fatalf("resume across a removal: %+v, %d frames", got, len(sent))
	}
	time.Sleep(20 * time.Millisecond)
	if c.Len() != 1 {
		t.Fatalf("removed message sent: %d frames", c.Len())
	}
}
