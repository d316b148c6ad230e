package session_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// wait bounds every wait; generous because CI machines can be loaded.
const wait = 10 * time.Second

// quiet is how long a test waits to be sure nothing more is sent.
const quiet = 30 * time.Millisecond

var versions = []phoenix.Version{phoenix.V2, phoenix.V1}

type env struct {
	v    phoenix.Version
	b    *memory.Broker
	h    *hub.Hub
	cfg  *session.Config
	conn *transporttest.Conn
	s    *session.Session
	seen int // messages already checked by expect
}

func newEnv(t *testing.T, v phoenix.Version) *env {
	t.Helper()
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, LeaveGrace: 10 * time.Millisecond})
	t.Cleanup(h.Close)
	cfg := &session.Config{Hub: h, Broker: b}
	cfg.SetDefaults()
	e := &env{v: v, b: b, h: h, cfg: cfg}
	e.conn = transporttest.NewConn()
	e.s = session.New(cfg, e.conn, v, nil)
	return e
}

// ref renders a ref for frames: "" is null.
func ref(r string) string {
	if r == "" {
		return "null"
	}
	return strconv.Quote(r)
}

// msg is a message in the env's version: [j,r,topic,event,payload] for v2,
// {"topic","event","payload","ref","join_ref"} for v1 client frames. For
// expected server frames use out, which drops join_ref in v1.
func (e *env) msg(j, r, topic, event, payload string) string {
	if e.v == phoenix.V1 {
		s := fmt.Sprintf(`{"topic":%q,"event":%q,"payload":%s,"ref":%s`, topic, event, payload, ref(r))
		if j != "" {
			s += `,"join_ref":` + ref(j)
		}
		return s + "}"
	}
	return fmt.Sprintf(`[%s,%s,%q,%q,%s]`, ref(j), ref(r), topic, event, payload)
}

// out is a server frame as the session encodes it.
func (e *env) out(j, r, topic, event, payload string) string {
	if e.v == phoenix.V1 {
		return fmt.Sprintf(`{"topic":%q,"event":%q,"payload":%s,"ref":%s}`, topic, event, payload, ref(r))
	}
	return fmt.Sprintf(`[%s,%s,%q,%q,%s]`, ref(j), ref(r), topic, event, payload)
}

func (e *env) ok(j, r, topic string) string {
	return e.out(j, r, topic, "phx_reply", `{"status":"ok","response":{}}`)
}

func (e *env) errReply(j, r, topic, reason string) string {
	return e.out(j, r, topic, "phx_reply", fmt.Sprintf(`{"status":"error","response":{"reason":%q}}`, reason))
}

func (e *env) closeMsg(j, topic string) string { return e.out(j, j, topic, "phx_close", `{}`) }

func (e *env) send(frame string) { e.s.HandleMessage(false, []byte(frame)) }

// expect waits for the next len(want) messages and checks them in order.
func (e *env) expect(t *testing.T, want ...string) {
	t.Helper()
	got := e.conn.WaitLen(e.seen+len(want), wait)
	if len(got) < e.seen+len(want) {
		t.Fatalf("got %d new messages %s, want %d: %q", len(got)-e.seen, texts(got[e.seen:]), len(want), want)
	}
	for i, w := range want {
		m := got[e.seen+i]
		if m.Binary || string(m.Data) != w {
			t.Fatalf("message %d = %s (binary %v), want %s", e.seen+i, m.Data, m.Binary, w)
		}
	}
	e.seen += len(want)
}

// expectNone checks that nothing beyond what expect saw arrives.
func (e *env) expectNone(t *testing.T) {
	t.Helper()
	time.Sleep(quiet)
	if got := e.conn.Sent(); len(got) > e.seen {
		t.Fatalf("unexpected messages: %s", texts(got[e.seen:]))
	}
}

func texts(ms []*transport.Message) string {
	var b bytes.Buffer
	for _, m := range ms {
		b.WriteString("\n\t")
		b.Write(m.Data)
	}
	return b.String()
}

// join joins topic with join_ref j (also the ref) and checks the ok reply.
func (e *env) join(t *testing.T, j, topic string) {
	t.Helper()
	e.send(e.msg(j, j, topic, "phx_join", `{}`))
	e.expect(t, e.ok(j, j, topic))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func forVersions(t *testing.T, f func(t *testing.T, e *env)) {
	t.Parallel()
	for _, v := range versions {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			f(t, newEnv(t, v))
		})
	}
}

func TestHeartbeat(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.send(e.msg("", "12", "phoenix", "heartbeat", `{}`))
		e.expect(t, e.ok("", "12", "phoenix"))
		if e.v == phoenix.V2 && string(e.conn.Sent()[0].Data) != `[null,"12","phoenix","phx_reply",{"status":"ok","response":{}}]` {
			t.Fatalf("heartbeat reply = %s", e.conn.Sent()[0].Data)
		}
		// Also after a join, and with nothing subscribed for it.
		e.join(t, "3", "room:1")
		e.send(e.msg("", "13", "phoenix", "heartbeat", `{}`))
		e.expect(t, e.ok("", "13", "phoenix"))
		if got := e.b.Subscriptions("phoenix"); got != 0 {
			t.Fatalf("heartbeat subscribed to %q", "phoenix")
		}
		e.expectNone(t)
	})
}

func TestJoinReply(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		// First join of the topic (waits for the broker) and a join of a
		// live topic by a second session (TryJoin path).
		e.send(e.msg("5", "5", "room:1", "phx_join", `{"token":"x"}`))
		e.expect(t, e.ok("5", "5", "room:1"))
		if e.v == phoenix.V2 && string(e.conn.Sent()[0].Data) != `["5","5","room:1","phx_reply",{"status":"ok","response":{}}]` {
			t.Fatalf("join reply = %s", e.conn.Sent()[0].Data)
		}
		other := &env{v: e.v, b: e.b, h: e.h, cfg: e.cfg, conn: transporttest.NewConn()}
		other.s = session.New(e.cfg, other.conn, e.v, nil)
		other.send(other.msg("8", "9", "room:1", "phx_join", `null`))
		other.expect(t, other.ok("8", "9", "room:1"))
		if got := e.h.Members("room:1"); got != 2 {
			t.Fatalf("hub members = %d, want 2", got)
		}
		if got := e.b.SubscribeCalls(); got != 1 {
			t.Fatalf("SubscribeCalls = %d, want 1", got)
		}
		// Broadcasts reach the member as null/null.
		if _, err := e.b.Publish(t.Context(), "room:1", "news", []byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
		e.expect(t, e.out("", "", "room:1", "news", `{"n":1}`))
		e.expectNone(t)
	})
}

func TestLeave(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		e.send(e.msg("1", "2", "room:1", "phx_leave", `{}`))
		e.expect(t, e.ok("1", "2", "room:1"), e.closeMsg("1", "room:1"))
		if got := e.h.Members("room:1"); got != 0 {
			t.Fatalf("hub members = %d after leave", got)
		}
		waitFor(t, "subscription dropped after grace", func() bool { return e.b.Subscriptions("room:1") == 0 })
		// No longer delivered to, and pushes are unmatched.
		e.send(e.msg("1", "3", "room:1", "new_msg", `{}`))
		e.expect(t, e.errReply("", "3", "room:1", session.ReasonUnmatchedTopic))
		e.expectNone(t)
	})
}

func TestLeaveUnknownTopic(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.send(e.msg("9", "10", "room:never", "phx_leave", `{}`))
		e.expect(t, e.ok("9", "10", "room:never"))
		e.expectNone(t)
	})
}

func TestStaleLeave(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "4", "room:1")
		e.send(e.msg("2", "6", "room:1", "phx_leave", `{}`))
		e.expectNone(t)
		if got := e.h.Members("room:1"); got != 1 {
			t.Fatalf("hub members = %d after stale leave, want 1", got)
		}
		// The current instance still works.
		e.send(e.msg("4", "7", "room:1", "phx_leave", `{}`))
		e.expect(t, e.ok("4", "7", "room:1"), e.closeMsg("4", "room:1"))
	})
}

func TestDuplicateJoin(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		e.send(e.msg("3", "3", "room:1", "phx_join", `{}`))
		e.expect(t, e.closeMsg("1", "room:1"), e.ok("3", "3", "room:1"))
		if got := e.h.Members("room:1"); got != 1 {
			t.Fatalf("hub members = %d after duplicate join, want exactly 1", got)
		}
		if got := e.b.Deliver(&broker.Message{Topic: "room:1", Event: "news", Payload: []byte(`{}`)}); got != 1 {
			t.Fatalf("%d subscriptions delivered, want 1", got)
		}
		e.expect(t, e.out("", "", "room:1", "news", `{}`))
		e.expectNone(t)
		// The old join_ref is stale now; the new one is current.
		e.send(e.msg("1", "4", "room:1", "phx_leave", `{}`))
		e.expectNone(t)
		e.send(e.msg("3", "5", "room:1", "phx_leave", `{}`))
		e.expect(t, e.ok("3", "5", "room:1"), e.closeMsg("3", "room:1"))
		if got := e.h.Members("room:1"); got != 0 {
			t.Fatalf("hub members = %d after leave", got)
		}
	})
}

func TestPushUnjoined(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.send(e.msg("1", "2", "room:1", "new_msg", `{"body":"hi"}`))
		e.expect(t, e.errReply("", "2", "room:1", "unmatched topic"))
		if e.v == phoenix.V2 && string(e.conn.Sent()[0].Data) != `[null,"2","room:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]` {
			t.Fatalf("reply = %s", e.conn.Sent()[0].Data)
		}
		if got := len(e.b.Published()); got != 0 {
			t.Fatalf("%d messages published for an unjoined push", got)
		}
		e.expectNone(t)
	})
}

// replies returns the phx_reply messages sent so far, skipping broadcasts.
func replies(t *testing.T, c *transporttest.Conn) []string {
	t.Helper()
	var out []string
	for _, m := range c.Sent() {
		if bytes.Contains(m.Data, []byte(`"phx_reply"`)) {
			out = append(out, string(m.Data))
		}
	}
	return out
}

func TestPushJoined(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		e.send(e.msg("1", "2", "room:1", "new_msg", `{"body":"hi"}`))
		// The reply and the broadcast of the push itself may arrive in
		// either order.
		got := e.conn.WaitLen(3, wait)
		want := map[string]bool{
			e.ok("1", "2", "room:1"):                            true,
			e.out("", "", "room:1", "new_msg", `{"body":"hi"}`): true,
		}
		if len(got) != 3 {
			t.Fatalf("got %s, want the push reply and its broadcast", texts(got[1:]))
		}
		for _, m := range got[1:] {
			if !want[string(m.Data)] {
				t.Fatalf("unexpected message %s", m.Data)
			}
			delete(want, string(m.Data))
		}
		pub := e.b.Published()
		if len(pub) != 1 || pub[0].Topic != "room:1" || pub[0].Event != "new_msg" || string(pub[0].Payload) != `{"body":"hi"}` {
			t.Fatalf("published %+v", pub)
		}
	})
}

func TestPushOrder(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		const n = 300
		for i := range n {
			e.send(e.msg("1", strconv.Itoa(100+i), "room:1", "new_msg", fmt.Sprintf(`{"i":%d}`, i)))
		}
		waitFor(t, "all pushes published", func() bool { return len(e.b.Published()) >= n })
		for i, m := range e.b.Published() {
			if want := fmt.Sprintf(`{"i":%d}`, i); string(m.Payload) != want {
				t.Fatalf("publish %d = %s, want %s (out of order)", i, m.Payload, want)
			}
		}
		waitFor(t, "all replies", func() bool { return len(replies(t, e.conn)) >= n+1 })
		for i, r := range replies(t, e.conn)[1:] {
			if want := e.ok("1", strconv.Itoa(100+i), "room:1"); r != want {
				t.Fatalf("reply %d = %s, want %s", i, r, want)
			}
		}
	})
}

func TestPushPublishFailure(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.join(t, "1", "room:1")
		e.b.PublishErr = errors.New("bus down")
		e.send(e.msg("1", "2", "room:1", "new_msg", `{}`))
		e.expect(t, e.errReply("1", "2", "room:1", session.ReasonPublishFailed))
		e.expectNone(t)
	})
}

func TestInvalidTopic(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		for i, topic := range []string{"room:", "a::b", "room:*", ">", "phoenix", "bad\ttopic"} {
			r := strconv.Itoa(i + 1)
			e.send(e.msg(r, r, topic, "phx_join", `{}`))
			e.expect(t, e.errReply(r, r, topic, session.ReasonInvalidTopic))
		}
		if got := e.b.SubscribeCalls(); got != 0 {
			t.Fatalf("SubscribeCalls = %d for invalid topics", got)
		}
		e.expectNone(t)
	})
}

func TestTooManyChannels(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		if e.cfg.MaxChannels != 100 {
			t.Fatalf("default MaxChannels = %d, want 100", e.cfg.MaxChannels)
		}
		var want []string
		for i := range 100 {
			r, topic := strconv.Itoa(i+1), "room:"+strconv.Itoa(i)
			e.send(e.msg(r, r, topic, "phx_join", `{}`))
			want = append(want, e.ok(r, r, topic))
		}
		// First joins answer from their own goroutines, in any order.
		got := e.conn.WaitLen(100, wait)
		set := map[string]bool{}
		for _, w := range want {
			set[w] = true
		}
		for _, m := range got {
			if !set[string(m.Data)] {
				t.Fatalf("unexpected message %s", m.Data)
			}
			delete(set, string(m.Data))
		}
		e.seen = 100
		e.send(e.msg("101", "101", "room:100", "phx_join", `{}`))
		e.expect(t, e.errReply("101", "101", "room:100", session.ReasonTooManyJoined))
		if got := e.h.Members("room:100"); got != 0 {
			t.Fatalf("refused join has %d members", got)
		}
		for i := range 100 {
			if got := e.h.Members("room:" + strconv.Itoa(i)); got != 1 {
				t.Fatalf("room:%d has %d members, want 1", i, got)
			}
		}
		// The first 100 are unaffected: delivered to, and still pushable.
		e.b.Deliver(&broker.Message{Topic: "room:0", Event: "news", Payload: []byte(`{}`)})
		e.expect(t, e.out("", "", "room:0", "news", `{}`))
		// Leaving one makes room again.
		e.send(e.msg("1", "102", "room:0", "phx_leave", `{}`))
		e.expect(t, e.ok("1", "102", "room:0"), e.closeMsg("1", "room:0"))
		e.send(e.msg("103", "103", "room:100", "phx_join", `{}`))
		e.expect(t, e.ok("103", "103", "room:100"))
	})
}

func TestBadRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.send(`["1","2","room:1","new_msg"]`)
	e.expect(t, `["1","2","room:1","phx_reply",{"status":"error","response":{"reason":"bad_request"}}]`)
	e.send(`["1","3","room:1",5,{}]`)
	e.expect(t, `["1","3","room:1","phx_reply",{"status":"error","response":{"reason":"bad_request"}}]`)
	// A join whose payload is not an object is a bad request too.
	e.send(`["4","4","room:1","phx_join",[1]]`)
	e.expect(t, `["4","4","room:1","phx_reply",{"status":"error","response":{"reason":"bad_request"}}]`)
	if closed, _, _ := e.conn.Closed(); closed {
		t.Fatal("bad request closed the connection")
	}
	e.expectNone(t)

	e1 := newEnv(t, phoenix.V1)
	e1.send(`{"topic":"room:1","event":"new_msg","ref":"2","join_ref":"1"}`)
	e1.expect(t, `{"topic":"room:1","event":"phx_reply","payload":{"status":"error","response":{"reason":"bad_request"}},"ref":"2"}`)
}

func TestUndecodableCloses(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.send(`this is not json`)
		closed, code, _ := e.conn.Closed()
		if !closed || code != transport.CloseInvalidPayload {
			t.Fatalf("closed %v with %d, want 1007", closed, code)
		}
	})
}

func TestInvalidUTF8Closes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.send("[null,\"1\",\"room:\xff\",\"e\",{}]")
	if closed, code, _ := e.conn.Closed(); !closed || code != transport.CloseInvalidPayload {
		t.Fatalf("closed %v with %d, want 1007", closed, code)
	}
}

func TestBinaryFrameToV1Closes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V1)
	e.s.HandleMessage(true, []byte{0, 1, 1, 6, 3, '1', '2', 'r', 'o', 'o', 'm', ':', '1', 'b', 'i', 'n', 7})
	closed, code, _ := e.conn.Closed()
	if !closed || code != transport.CloseUnsupportedData {
		t.Fatalf("closed %v with %d, want 1003", closed, code)
	}
}

func TestBinaryPushV2(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V2)
	e.join(t, "1", "room:1")
	frame := []byte{0, 1, 1, 6, 3, '1', '2', 'r', 'o', 'o', 'm', ':', '1', 'b', 'i', 'n', 7, 7, 7}
	e.s.HandleMessage(true, frame)
	frame[len(frame)-1] = 0 // the read buffer is reused after the call
	waitFor(t, "binary push published", func() bool { return len(e.b.Published()) == 1 })
	if m := e.b.Published()[0]; m.Event != "bin" || !bytes.Equal(m.Payload, []byte{7, 7, 7}) || !m.Binary {
		t.Fatalf("published %+v", m)
	}
	waitFor(t, "push reply", func() bool { return len(replies(t, e.conn)) == 2 })
	if r := replies(t, e.conn)[1]; r != e.ok("1", "2", "room:1") {
		t.Fatalf("reply = %s", r)
	}
}

func TestHandleCloseLeavesAll(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		topics := []string{"room:1", "room:2", "room:3"}
		for i, topic := range topics {
			e.join(t, strconv.Itoa(i+1), topic)
		}
		// One more whose subscribe is still in flight at close time.
		e.b.SubscribeDelay = 50 * time.Millisecond
		e.send(e.msg("9", "9", "room:slow", "phx_join", `{}`))
		e.s.HandleClose(transport.CloseNormal)
		for _, topic := range topics {
			if got := e.h.Members(topic); got != 0 {
				t.Fatalf("%s has %d members after HandleClose", topic, got)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if got := e.h.Members("room:slow"); got != 0 {
			t.Fatalf("pending join left %d members after HandleClose", got)
		}
		for _, topic := range append(topics, "room:slow") {
			waitFor(t, "subscription drop of "+topic, func() bool { return e.b.Subscriptions(topic) == 0 })
		}
		// Messages after close are ignored.
		e.send(e.msg("10", "10", "room:4", "phx_join", `{}`))
		e.expectNone(t)
	})
}

func TestLeaveWhileJoinSubscribing(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		const delay = 100 * time.Millisecond
		e.b.SubscribeDelay = delay
		start := time.Now()
		e.send(e.msg("3", "3", "room:1", "phx_join", `{}`))
		e.send(e.msg("3", "4", "room:1", "phx_leave", `{}`))
		e.expect(t, e.ok("3", "4", "room:1"), e.closeMsg("3", "room:1"))
		if d := time.Since(start); d >= delay {
			t.Fatalf("leave answered after %v, not before the subscribe completed", d)
		}
		waitFor(t, "subscribe completed", func() bool { return e.b.SubscribeCalls() == 1 && time.Since(start) > delay })
		time.Sleep(quiet)
		if got := e.h.Members("room:1"); got != 0 {
			t.Fatalf("hub members = %d after the subscribe completed, want 0", got)
		}
		e.expectNone(t) // no late join reply
		waitFor(t, "subscription dropped", func() bool { return e.b.Subscriptions("room:1") == 0 })
		// A later join works normally.
		e.b.SubscribeDelay = 0
		e.join(t, "6", "room:1")
	})
}

func TestSubscribeFailure(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.b.SubscribeErr = errors.New("bus down")
		e.send(e.msg("1", "1", "room:1", "phx_join", `{}`))
		e.expect(t, e.errReply("1", "1", "room:1", session.ReasonUnavailable))
		if got := e.h.Members("room:1"); got != 0 {
			t.Fatalf("hub members = %d after failed join", got)
		}
		// The instance is gone: a push is unmatched, a leave still ok.
		e.send(e.msg("1", "2", "room:1", "new_msg", `{}`))
		e.expect(t, e.errReply("", "2", "room:1", session.ReasonUnmatchedTopic))
		// The client's rejoin succeeds once the bus is back.
		e.b.SubscribeErr = nil
		e.join(t, "3", "room:1")
		e.expectNone(t)
	})
}

func TestDuplicateJoinWhileSubscribing(t *testing.T) {
	forVersions(t, func(t *testing.T, e *env) {
		e.b.SubscribeDelay = 50 * time.Millisecond
		e.send(e.msg("1", "1", "room:1", "phx_join", `{}`))
		e.send(e.msg("2", "2", "room:1", "phx_join", `{}`))
		e.expect(t, e.closeMsg("1", "room:1"), e.ok("2", "2", "room:1"))
		time.Sleep(100 * time.Millisecond)
		if got := e.h.Members("room:1"); got != 1 {
			t.Fatalf("hub members = %d, want 1", got)
		}
		e.expectNone(t)
	})
}

// TestHelpersBuildJSON guards the helpers: every frame they build is valid JSON.
func TestHelpersBuildJSON(t *testing.T) {
	t.Parallel()
	for _, v := range versions {
		e := &env{v: v}
		for _, s := range []string{e.msg("1", "", "t", "e", `{}`), e.ok("", "1", "t"), e.closeMsg("1", "t")} {
			if !json.Valid([]byte(s)) {
				t.Fatalf("helper built invalid JSON: %s", s)
			}
		}
	}
}

// TestJoinTimeout: Config.JoinTimeout bounds a join that waits for the
// broker, so a slow first subscribe is answered "unavailable" in time and
// leaves no membership.
func TestJoinTimeout(t *testing.T) {
	t.Parallel()
	const delay = 500 * time.Millisecond
	b := memory.New()
	b.SubscribeDelay = delay
	h := hub.New(hub.Config{Broker: b, LeaveGrace: 10 * time.Millisecond})
	t.Cleanup(h.Close)
	cfg := &session.Config{Hub: h, Broker: b, JoinTimeout: 20 * time.Millisecond}
	cfg.SetDefaults()
	e := &env{v: phoenix.V2, b: b, h: h, cfg: cfg, conn: transporttest.NewConn()}
	e.s = session.New(cfg, e.conn, e.v, nil)
	start := time.Now()
	e.send(e.msg("1", "1", "room:1", "phx_join", `{}`))
	e.expect(t, e.errReply("1", "1", "room:1", session.ReasonUnavailable))
	if d := time.Since(start); d >= delay/2 {
		t.Errorf("join answered after %v, JoinTimeout is %v", d, cfg.JoinTimeout)
	}
	waitFor(t, "no membership", func() bool { return h.Members("room:1") == 0 })
}

// TestV1WithoutJoinRef: a v1 client that never sends join_ref (the field is
// optional in v1) can push to and leave the channel it joined.
func TestV1WithoutJoinRef(t *testing.T) {
	t.Parallel()
	e := newEnv(t, phoenix.V1)
	e.send(`{"topic":"room:1","event":"phx_join","payload":{},"ref":"1"}`)
	e.expect(t, e.ok("", "1", "room:1"))
	e.send(`{"topic":"room:1","event":"new_msg","payload":{"a":1},"ref":"2"}`)
	waitFor(t, "push reply", func() bool { return len(replies(t, e.conn)) >= 2 })
	if r := replies(t, e.conn)[1]; r != e.ok("", "2", "room:1") {
		t.Errorf("push reply = %s, want ok", r)
	}
	e.conn.Reset()
	e.seen = 0
	e.send(`{"topic":"room:1","event":"phx_leave","payload":{},"ref":"3"}`)
	time.Sleep(quiet)
	if got := replies(t, e.conn); len(got) != 1 || got[0] != e.ok("", "3", "room:1") {
		t.Errorf("leave replies = %q, want one ok", got)
	}
	if got := e.h.Members("room:1"); got != 0 {
		t.Errorf("hub members = %d after leave, want 0", got)
	}
}
