package session_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// Phoenix accepts any JSON value as join_ref and ref and echoes it back
// unchanged; Python's phxsocket sends numbers.
func TestNumericRefsEchoed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.send(`[null,0,"phoenix","heartbeat",{}]`)
	e.expect(t, `[null,0,"phoenix","phx_reply",{"status":"ok","response":{}}]`)
	e.send(`[1,1,"room:1","phx_join",{}]`)
	e.expect(t, `[1,1,"room:1","phx_reply",{"status":"ok","response":{}}]`)
	e.send(`[1,2.50,"room:1","new_msg",{}]`)
	waitFor(t, "the push reply", func() bool {
		for _, r := range replies(t, e.conn) {
			if r == `[1,2.50,"room:1","phx_reply",{"status":"ok","response":{}}]` {
				return true
			}
		}
		return false
	})
	// A push whose numeric join_ref is another value is stale: 1.0 is
	// not 1, as in Phoenix (===).
	e.send(`[1.0,3,"room:1","new_msg",{}]`)
	want := `[null,3,"room:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]`
	waitFor(t, "the stale push's reply", func() bool {
		for _, r := range replies(t, e.conn) {
			if r == want {
				return true
			}
		}
		return false
	})
	// Leave, echoed; phx_close carries the join's join_ref.
	e.send(`[1,{"r":[4]},"room:1","phx_leave",{}]`)
	waitFor(t, "the leave's close", func() bool {
		for _, m := range e.conn.Sent() {
			if string(m.Data) == `[1,1,"room:1","phx_close",{}]` {
				return true
			}
		}
		return false
	})
	found := false
	for _, r := range replies(t, e.conn) {
		found = found || r == `[1,{"r":[4]},"room:1","phx_reply",{"status":"ok","response":{}}]`
	}
	if !found {
		t.Fatalf("leave reply missing: %q", replies(t, e.conn))
	}
	if closed, _, _ := e.conn.Closed(); closed {
		t.Fatal("numeric refs closed the connection")
	}

	e1 := newEnv(t, phoenix.V1)
	e1.send(`{"topic":"room:1","event":"phx_join","payload":{},"ref":0}`)
	e1.expect(t, `{"topic":"room:1","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":0}`)
}

// A lone surrogate escape in a topic would decode to U+FFFD: two inputs,
// one topic, and a reply topic the client does not recognise. It is
// refused, and the reply names the topic as it was sent.
func TestLoneSurrogateTopic(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.send(rawMsg(e.v, "1", "1", `room:\ud800`, "phx_join", `{}`))
		want := `["1","1","room:\ud800","phx_reply",{"status":"error","response":{"reason":"invalid_topic"}}]`
		if e.v == phoenix.V1 {
			want = `{"topic":"room:\ud800","event":"phx_reply","payload":{"status":"error","response":{"reason":"invalid_topic"}},"ref":"1"}`
		}
		e.expect(t, want)
		e.send(rawMsg(e.v, "1", "2", "room:1", `x\udfff`, `{}`))
		e.expect(t, e.errReply("1", "2", "room:1", session.ReasonInvalidEvent))
		if got := e.b.SubscribeCalls(); got != 0 {
			t.Fatalf("SubscribeCalls = %d", got)
		}
		if got := e.cfg.Stats().Joins[session.JoinInvalid]; got != 1 {
			t.Fatalf("%d invalid joins counted, want 1", got)
		}
	})
}

// rawMsg builds a frame from JSON string contents already escaped (e.msg
// quotes with %q, which would escape the backslash of `\ud800`).
func rawMsg(v phoenix.Version, j, r, topic, event, payload string) string {
	if v == phoenix.V1 {
		return fmt.Sprintf(`{"topic":"%s","event":"%s","payload":%s,"ref":"%s","join_ref":"%s"}`, topic, event, payload, r, j)
	}
	return fmt.Sprintf(`["%s","%s","%s","%s",%s]`, j, r, topic, event, payload)
}

// Every name phoenix.js or its Presence treats specially is refused on
// push with a reason that says so, and nothing is published.
func TestReservedAndInvalidPushEvents(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		cases := []struct{ event, reason string }{
			{"phx_reply", session.ReasonReservedEvent}, {"phx_foo", session.ReasonReservedEvent},
			{"chan_reply_7", session.ReasonReservedEvent}, {"presence_diff", session.ReasonReservedEvent},
			{"presence_state", session.ReasonReservedEvent}, {"fabric:offset", session.ReasonReservedEvent},
			{"", session.ReasonInvalidEvent}, {strings.Repeat("e", 256), session.ReasonInvalidEvent},
			{" padded", session.ReasonInvalidEvent}, {`a\u0001b`, session.ReasonInvalidEvent},
		}
		for i, c := range cases {
			r := fmt.Sprint(10 + i)
			e.send(rawMsg(e.v, "1", r, "room:1", c.event, `{}`))
			e.expect(t, e.errReply("1", r, "room:1", c.reason))
		}
		e.expectNone(t)
		if pub := e.b.Published(); len(pub) != 0 {
			t.Fatalf("published %+v", pub)
		}
		st := e.cfg.Stats().PushesRefused
		if st[session.ReasonReservedEvent] != 6 || st[session.ReasonInvalidEvent] != 4 {
			t.Fatalf("refusals counted %v", st)
		}
	})
}

// tooLarge is a bus whose size cap every publish exceeds.
type tooLarge struct{ *memory.Broker }

func (tooLarge) Publish(context.Context, string, string, []byte) (uint64, error) {
	return 0, fmt.Errorf("%w: 2000000 bytes", broker.ErrTooLarge)
}

func TestPushTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.cfg.Broker = tooLarge{e.b}
	e.join(t, "1", "room:1")
	e.send(e.msg("1", "2", "room:1", "big", `{}`))
	e.expect(t, e.errReply("1", "2", "room:1", session.ReasonTooLarge))
}

// routed is a bus that sends every routed push to a fake service answering with
// reply, recording what reached it.
type routed struct {
	*memory.Broker
	reply broker.Reply
	mu    sync.Mutex
	got   []string // events that reached the service
}

// game routes its pushes to a service (the routed tests' namespace).
var game = namespace.MustNew(map[string]namespace.Namespace{"game": {Pushes: namespace.PushesRequest}})

func (r *routed) Request(_ context.Context, _, event string, _ []byte, _ broker.PushMeta) (broker.Reply, error) {
	r.mu.Lock()
	r.got = append(r.got, event)
	r.mu.Unlock()
	return r.reply, nil
}

func (r *routed) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// Routed pushes pass the same event-name rule as published ones: an
// empty, 60 KB or phx_reply name never reaches the service.
func TestRoutedPushEventsValidated(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		r := &routed{Broker: e.b, reply: broker.Reply{OK: true, Response: []byte(`{"a":1}`)}}
		e.cfg.Broker, e.cfg.Namespaces = r, game
		e.join(t, "1", "game:1")
		for i, ev := range []string{"", strings.Repeat("e", 60<<10), "phx_reply", "chan_reply_3", "presence_diff"} {
			ref := fmt.Sprint(10 + i)
			e.send(e.msg("1", ref, "game:1", ev, `{}`))
			want := session.ReasonReservedEvent
			if i < 2 {
				want = session.ReasonInvalidEvent
			}
			e.expect(t, e.errReply("1", ref, "game:1", want))
		}
		e.send(e.msg("1", "20", "game:1", "move", `{}`))
		e.expect(t, e.out("1", "20", "game:1", "phx_reply", `{"status":"ok","response":{"a":1}}`))
		if got := r.events(); len(got) != 1 || got[0] != "move" {
			t.Fatalf("the service got %q", got)
		}
	})
}

// A service's reply that is not a JSON object: bytes are relayed as a
// binary reply (Phoenix's {:binary, data}), or as {"base64"} to clients
// without binary frames; JSON of another kind is refused as invalid_reply.
func TestRoutedPushNonObjectReplies(t *testing.T) {
	bin := []byte{0, 1, 0xff}
	for _, c := range []struct {
		name     string
		v        phoenix.Version
		textOnly bool
		reply    broker.Reply
		want     string
		binary   bool
	}{
		{"bytes v2", phoenix.V2, false, broker.Reply{OK: true, Response: bin, Binary: true},
			"\x01\x01\x01\x06\x02" + "12game:1ok" + string(bin), true},
		{"bytes error status v2", phoenix.V2, false, broker.Reply{Response: bin, Binary: true},
			"\x01\x01\x01\x06\x05" + "12game:1error" + string(bin), true},
		{"bytes LongPoll", phoenix.V2, true, broker.Reply{OK: true, Response: bin, Binary: true},
			`["1","2","game:1","phx_reply",{"status":"ok","response":{"base64":"` + base64.StdEncoding.EncodeToString(bin) + `"}}]`, false},
		{"bytes v1", phoenix.V1, false, broker.Reply{OK: true, Response: bin, Binary: true},
			`{"topic":"game:1","event":"phx_reply","payload":{"status":"ok","response":{"base64":"AAH/"}},"ref":"2"}`, false},
		{"JSON string", phoenix.V2, false, broker.Reply{OK: true, Response: []byte(`"hello"`)},
			`["1","2","game:1","phx_reply",{"status":"error","response":{"reason":"invalid_reply"}}]`, false},
		{"JSON array", phoenix.V2, false, broker.Reply{OK: true, Response: []byte(` [1]`)},
			`["1","2","game:1","phx_reply",{"status":"error","response":{"reason":"invalid_reply"}}]`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, c.v)
			e.cfg.Broker, e.cfg.Namespaces = &routed{Broker: e.b, reply: c.reply}, game
			if c.textOnly {
				e.s.SetTextOnly()
			}
			e.join(t, "1", "game:1")
			e.send(e.msg("1", "2", "game:1", "move", `{}`))
			got := e.conn.WaitLen(2, wait)
			if len(got) < 2 || got[1].Binary != c.binary || string(got[1].Data) != c.want {
				t.Fatalf("got %q (binary %v), want %q", got[len(got)-1].Data, got[len(got)-1].Binary, c.want)
			}
		})
	}
}

// countHandler counts log records by level.
type countHandler struct{ info, warn, debug atomic.Int64 }

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelWarn:
		h.warn.Add(1)
	case r.Level >= slog.LevelInfo:
		h.info.Add(1)
	default:
		h.debug.Add(1)
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// A flood of bad pushes is counted, not logged line by line.
func TestRefusedPushesLogSampled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	h := &countHandler{}
	e.cfg.Logger = slog.New(h)
	e.join(t, "1", "room:1")
	const n = 500
	for i := range n {
		e.send(e.msg("1", fmt.Sprint(10+i), "room:1", "phx_forged", `{}`))
	}
	waitFor(t, "every refusal", func() bool { return e.cfg.Stats().PushesRefused[session.ReasonReservedEvent] == n })
	if got := h.info.Load() + h.warn.Load(); got != 1 {
		t.Fatalf("%d Info/Warn lines for %d refused pushes, want 1 (sampled)", got, n)
	}
	if got := h.debug.Load(); got != 1 {
		t.Fatalf("%d Debug lines, want 1 (the connection's first)", got)
	}
	// A second connection's first refusal is still at most sampled.
	c2 := transporttest.NewConn()
	s2 := session.New(e.cfg, c2, phoenix.V2, nil)
	s2.HandleMessage(false, []byte(`["1","1","room:1","phx_join",{}]`))
	c2.WaitLen(1, wait)
	s2.HandleMessage(false, []byte(`["1","2","room:1","presence_diff",{}]`))
	c2.WaitLen(2, wait)
	if got := h.info.Load() + h.warn.Load(); got != 1 {
		t.Fatalf("%d Info/Warn lines after another connection's refusal, want 1", got)
	}
	if !bytes.Contains(c2.Sent()[1].Data, []byte("reserved_event")) {
		t.Fatalf("reply %s", c2.Sent()[1].Data)
	}
}

// A v2 binary push passes the same event rule.
func TestBinaryPushReservedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.join(t, "1", "room:1")
	ev := "presence_diff"
	frame := append([]byte{0, 1, 1, 6, byte(len(ev))}, "12room:1"+ev+"\x07"...)
	e.s.HandleMessage(true, frame)
	e.expect(t, e.errReply("1", "2", "room:1", session.ReasonReservedEvent))
	if pub := e.b.Published(); len(pub) != 0 {
		t.Fatalf("published %+v", pub)
	}
}

// A join_ref that looks like a number but is not one as strconv writes it
// ("007") is echoed as sent, and a ref naming the same number another
// way ("7") is another join_ref: instances keep small decimal join_refs
// as numbers (channel.go) without changing what they compare equal to.
func TestDecimalLookingRefsEchoed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.send(`["007","007","room:1","phx_join",{}]`)
	e.expect(t, `["007","007","room:1","phx_reply",{"status":"ok","response":{}}]`)
	e.send(`["7","8","room:1","new_msg",{}]`)
	want := `[null,"8","room:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]`
	waitFor(t, "the stale push's reply", func() bool {
		for _, r := range replies(t, e.conn) {
			if r == want {
				return true
			}
		}
		return false
	})
	e.send(`["12","9","room:2","phx_join",{}]`)
	waitFor(t, "the second join's reply", func() bool {
		for _, r := range replies(t, e.conn) {
			if r == `["12","9","room:2","phx_reply",{"status":"ok","response":{}}]` {
				return true
			}
		}
		return false
	})
	e.send(`["12","10","room:2","phx_leave",{}]`)
	waitFor(t, "the leave's close", func() bool {
		for _, m := range e.conn.Sent() {
			if string(m.Data) == `["12","12","room:2","phx_close",{}]` {
				return true
			}
		}
		return false
	})
}
