package session_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// userBudget is a Policy allowing everything, with a channel budget shared
// by every session holding it (as the gateway's does per user).
type userBudget struct {
	max, n atomic.Int32
}

func (*userBudget) CanJoin(string) bool    { return true }
func (*userBudget) CanPublish(string) bool { return true }
func (u *userBudget) AcquireChannel() bool {
	if u.n.Add(1) > u.max.Load() {
		u.n.Add(-1)
		return false
	}
	return true
}
func (u *userBudget) ReleaseChannel() { u.n.Add(-1) }

// A user's channels are counted across its connections: over the budget a
// join is refused with its own reason, and every way a channel goes
// (leave, duplicate join, disconnect) gives it back.
func TestUserChannelBudget(t *testing.T) {
	e := newEnv(t, phoenix.V2)
	u := &userBudget{}
	u.max.Store(2)
	e.s = session.New(e.cfg, e.conn, phoenix.V2, u)
	other := &env{v: phoenix.V2, b: e.b, h: e.h, cfg: e.cfg, conn: transporttest.NewConn()}
	other.s = session.New(e.cfg, other.conn, phoenix.V2, u)

	e.join(t, "1", "room:a")
	other.join(t, "1", "room:b")
	other.send(other.msg("2", "2", "room:c", "phx_join", `{}`))
	other.expect(t, other.errReply("2", "2", "room:c", session.ReasonTooManyJoinedByUser))
	if got := e.cfg.Stats().Joins[session.JoinUserBudget]; got != 1 {
		t.Fatalf("joins over the user budget counted %d, want 1", got)
	}
	e.send(e.msg("3", "3", "room:a", "phx_join", `{}`)) // replaces, does not add
	e.expect(t, e.closeMsg("1", "room:a"), e.ok("3", "3", "room:a"))
	e.send(e.msg("3", "4", "room:a", "phx_leave", `{}`))
	e.expect(t, e.ok("3", "4", "room:a"), e.closeMsg("3", "room:a"))
	other.join(t, "5", "room:c")
	other.s.HandleClose(1000)
	if n := u.n.Load(); n != 0 {
		t.Fatalf("%d channels still counted after leave and disconnect", n)
	}
}

// Push bytes are paced per connection: a burst passes, then pushes get
// rate_limited with limit "bytes".
func TestPushBytesRate(t *testing.T) {
	e := newEnv(t, phoenix.V2)
	e.cfg.PushBytesRate, e.cfg.PushBytesBurst = 1, 3000
	e.join(t, "1", "chat:x")
	body := `{"b":"` + strings.Repeat("x", 1000) + `"}`
	for i := range 4 {
		e.send(e.msg("1", string(rune('a'+i)), "chat:x", "big", body))
	}
	var got []*transport.Message
	waitFor(t, "4 replies", func() bool {
		got = got[:0]
		for _, m := range e.conn.Sent() {
			if strings.Contains(string(m.Data), `"phx_reply"`) && !strings.Contains(string(m.Data), `"1","1"`) {
				got = append(got, m)
			}
		}
		return len(got) == 4
	})
	ok, limited := 0, 0
	for _, m := range got {
		switch s := string(m.Data); {
		case strings.Contains(s, `"status":"ok"`):
			ok++
		case strings.Contains(s, `"reason":"rate_limited","limit":"bytes"`):
			limited++
		}
	}
	if ok != 2 || limited != 2 {
		t.Fatalf("4 pushes of 1 KB with a 3,000-byte burst: %d ok, %d limited, want 2 and 2:%s", ok, limited, texts(got))
	}
	if n := e.cfg.Stats().PushesLimited["bytes"]; n != 2 {
		t.Fatalf("PushesLimited[bytes] = %d, want 2", n)
	}
}

// stuckBroker's publishes wait until released: a bus slower than the
// rate lets pushes in.
type stuckBroker struct {
	*memory.Broker
	started chan struct{} // one send per publish begun
	release chan struct{}
}

func (b *stuckBroker) Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return b.Broker.Publish(ctx, topic, event, payload)
}

// While the bus is stuck, what waits in a connection's push queue stays
// within one byte burst: further pushes are refused, not queued.
func TestPushQueueBoundedWhileBusStuck(t *testing.T) {
	e := newEnv(t, phoenix.V2)
	sb := &stuckBroker{Broker: e.b, started: make(chan struct{}, 1), release: make(chan struct{})}
	cfg := &session.Config{Hub: e.h, Broker: sb, PushBytesRate: 1 << 20, PushBytesBurst: 3000}
	cfg.SetDefaults()
	e.cfg = cfg
	e.s = session.New(cfg, e.conn, phoenix.V2, nil)
	e.join(t, "1", "chat:x")
	body := `{"b":"` + strings.Repeat("x", 1000) + `"}`
	e.send(e.msg("1", "a", "chat:x", "big", body))
	select {
	case <-sb.started:
	case <-time.After(wait):
		t.Fatal("first push never reached the bus")
	}
	for i := 1; i < 10; i++ {
		// Spaced so that the byte rate (1 MiB/s) never refuses them:
		// only the queue does.
		time.Sleep(5 * time.Millisecond)
		e.send(e.msg("1", string(rune('a'+i)), "chat:x", "big", body))
	}
	// The first is being published (stuck), two more wait; the other
	// seven are refused at once.
	var limited int
	waitFor(t, "7 refusals", func() bool {
		limited = 0
		for _, m := range e.conn.Sent() {
			if strings.Contains(string(m.Data), `"limit":"bytes"`) {
				limited++
			}
		}
		return limited >= 7
	})
	close(sb.release)
	waitFor(t, "3 acks", func() bool {
		n := 0
		for _, m := range e.conn.Sent() {
			if strings.Contains(string(m.Data), `"phx_reply"`) && strings.Contains(string(m.Data), `"status":"ok"`) && !strings.Contains(string(m.Data), `"1","1"`) {
				n++
			}
		}
		return n == 3
	})
	if limited != 7 {
		t.Fatalf("%d pushes refused while the bus was stuck, want 7", limited)
	}
}
