package session_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// roomsOnly may join room:* only.
type roomsOnly struct{}

func (roomsOnly) CanJoin(topic string) bool    { return strings.HasPrefix(topic, "room:") }
func (roomsOnly) CanPublish(topic string) bool { return true }

// TestJoinStats: every join is counted once, under its result, in the
// counters every session of a Config shares.
func TestJoinStats(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, LeaveGrace: time.Hour})
	t.Cleanup(h.Close)
	cfg := &session.Config{Hub: h, Broker: b, MaxChannels: 2}
	cfg.SetDefaults()
	newSession := func() *env {
		e := &env{v: phoenix.V2, b: b, h: h, cfg: cfg, conn: transporttest.NewConn()}
		e.s = session.New(cfg, e.conn, e.v, roomsOnly{})
		return e
	}
	want := map[string]uint64{}
	check := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool {
			got := cfg.Stats().Joins
			for _, r := range session.JoinResults {
				if got[r] != want[r] {
					return false
				}
			}
			return len(got) == len(session.JoinResults)
		})
	}

	e := newSession()
	e.join(t, "1", "room:1")
	e.join(t, "2", "room:2")
	want[session.JoinOK] = 2
	e.send(e.msg("3", "3", "room::x", "phx_join", `{}`))
	e.send(e.msg("4", "4", "room:4", "phx_join", `[1]`))
	want[session.JoinInvalid] = 2
	e.send(e.msg("5", "5", "game:1", "phx_join", `{}`))
	want[session.JoinUnauthorized] = 1
	e.send(e.msg("6", "6", "room:6", "phx_join", `{}`))
	want[session.JoinTooManyChannels] = 1
	e.expect(t,
		e.errReply("3", "3", "room::x", session.ReasonInvalidTopic),
		e.errReply("4", "4", "room:4", session.ReasonBadRequest),
		e.errReply("5", "5", "game:1", session.ReasonUnauthorized),
		e.errReply("6", "6", "room:6", session.ReasonTooManyJoined))
	check("refusals counted")

	// A second session shares the counters.
	e2 := newSession()
	b.SubscribeErr = fmt.Errorf("bus down")
	e2.send(e2.msg("1", "1", "room:new", "phx_join", `{}`))
	e2.expect(t, e2.errReply("1", "1", "room:new", session.ReasonUnavailable))
	want[session.JoinError] = 1
	check("subscribe failure counted")

	// Left before the (slow) subscription settled: no reply, canceled.
	b.SubscribeErr = nil
	b.SubscribeDelay = 50 * time.Millisecond
	e2.send(e2.msg("2", "2", "room:slow", "phx_join", `{}`))
	e2.send(e2.msg("2", "3", "room:slow", "phx_leave", `{}`))
	want[session.JoinCanceled] = 1
	check("canceled join counted")
	waitFor(t, "membership undone", func() bool { return h.Members("room:slow") == 0 })

	// Over the join rate (one token, refilled once in 1,000 s).
	rcfg := &session.Config{Hub: h, Broker: b, JoinRate: 0.001, JoinBurst: 1}
	rcfg.SetDefaults()
	r := &env{v: phoenix.V2, b: b, h: h, cfg: rcfg, conn: transporttest.NewConn()}
	r.s = session.New(rcfg, r.conn, r.v, nil)
	r.send(r.msg("1", "1", "room:1", "phx_join", `{}`))
	r.send(r.msg("2", "2", "room:2", "phx_join", `{}`))
	waitFor(t, "rate limit counted", func() bool {
		st := rcfg.Stats().Joins
		return st[session.JoinOK] == 1 && st[session.JoinRateLimited] == 1
	})
	check("other configs' counters untouched")
}
