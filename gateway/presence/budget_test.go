package presence

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// A join wave shares one encoding of the state: every v2 joiner's message
// is its own head plus the same Tail, and v1 joiners share one message.
func TestJoinWaveSharesOneState(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	first := newClient()
	tr.Track("room:w", first, first.member("room:w", "u0"))
	waitSynced(t, tr, "room:w")
	tr.flush()
	const wave = 50
	var cs []*client
	for i := 1; i <= wave; i++ {
		cl := newClient()
		m := cl.member("room:w", fmt.Sprintf("u%d", i))
		m.JoinRef = phoenix.R(fmt.Sprint(i))
		if i%10 == 0 {
			m.Version = phoenix.V1
		}
		tr.Track("room:w", cl, m)
		cs = append(cs, cl)
	}
	tr.flush()
	var tail *transport.Message
	var v1 *transport.Message
	for i, cl := range cs {
		sent := cl.conn.Sent()
		if len(sent) != 1 {
			t.Fatalf("joiner %d got %d messages", i+1, len(sent))
		}
		m := sent[0]
		if (i+1)%10 == 0 {
			if v1 == nil {
				v1 = m
			} else if m != v1 {
				t.Fatal("v1 joiners of one wave got different messages")
			}
			var o struct {
				Event   string `json:"event"`
				Payload groups `json:"payload"`
			}
			if err := json.Unmarshal(m.Bytes(), &o); err != nil || o.Event != EventState || len(o.Payload) != wave+1 {
				t.Fatalf("v1 state %.200s: %v", m.Bytes(), err)
			}
			continue
		}
		if m.Tail == nil {
			t.Fatalf("joiner %d: state not shared by reference (%d bytes of its own)", i+1, len(m.Data))
		}
		if tail == nil {
			tail = m.Tail
		} else if m.Tail != tail {
			t.Fatal("joiners of one wave got different tails")
		}
		if len(m.Data) > 64 {
			t.Fatalf("joiner %d's own part is %d bytes: %s", i+1, len(m.Data), m.Data)
		}
		var f []json.RawMessage
		if err := json.Unmarshal(m.Bytes(), &f); err != nil || len(f) != 5 || string(f[0]) != fmt.Sprintf(`"%d"`, i+1) {
			t.Fatalf("joiner %d's state %.100s: %v", i+1, m.Bytes(), err)
		}
	}
	first.read(t)
	if len(first.view) != wave+1 {
		t.Fatalf("first member sees %d", len(first.view))
	}
}

// Over the member cap every member gets an empty state and counts; back
// under 90 % of it, the full state again.
func TestMemberCapSendsCounts(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTrackerWith(t, n, "A", c, Config{MaxMembers: 10, CountInterval: time.Second})
	var cs []*client
	add := func() *client {
		cl := newClient()
		tr.Track("room:c", cl, cl.member("room:c", fmt.Sprintf("u%d", len(cs))))
		cs = append(cs, cl)
		return cl
	}
	for i := 0; i < 10; i++ {
		add()
	}
	waitSynced(t, tr, "room:c")
	tr.flush()
	for _, cl := range cs {
		cl.read(t)
		if len(cl.view) != 10 || cl.counts != 0 {
			t.Fatalf("at the cap: %d members, %d counts", len(cl.view), cl.counts)
		}
	}
	// The 11th member: over the cap.
	add()
	tr.flush()
	for i, cl := range cs {
		cl.read(t)
		if len(cl.view) != 0 || cl.counts != 1 || cl.count.Count != 11 || cl.count.Metas != 11 || cl.diffs != 0 {
			t.Fatalf("member %d over the cap: %d listed, %d diffs, counts %d %+v", i, len(cl.view), cl.diffs, cl.counts, cl.count)
		}
	}
	// More joins: no diffs, the joiner gets {} and the count at once,
	// the others a count once CountInterval passed.
	late := add()
	tr.flush()
	late.read(t)
	if !late.state || len(late.view) != 0 || late.count.Count != 12 {
		t.Fatalf("late joiner: state %v, %d listed, count %+v", late.state, len(late.view), late.count)
	}
	cs[0].read(t)
	if cs[0].counts != 1 || cs[0].diffs != 0 {
		t.Fatalf("count before the interval: %d counts, %d diffs", cs[0].counts, cs[0].diffs)
	}
	c.add(time.Second)
	tr.housekeep(c.now())
	tr.flush()
	cs[0].read(t)
	if cs[0].counts != 2 || cs[0].count.Count != 12 || cs[0].diffs != 0 {
		t.Fatalf("after the interval: %d counts %+v, %d diffs", cs[0].counts, cs[0].count, cs[0].diffs)
	}
	// Down to 10 (not under 90 %): still counts. Down to 9: full state.
	tr.Untrack("room:c", cs[11])
	tr.Untrack("room:c", cs[10])
	tr.flush()
	cs[0].read(t)
	if len(cs[0].view) != 0 {
		t.Fatal("uncapped at the cap: no hysteresis")
	}
	tr.Untrack("room:c", cs[9])
	tr.flush()
	for _, cl := range cs[:9] {
		cl.read(t)
		if len(cl.view) != 9 {
			t.Fatalf("back under the cap: %s", cl.keys())
		}
	}
	// And diffs again.
	add()
	tr.flush()
	cs[0].read(t)
	if len(cs[0].view) != 10 || cs[0].diffs != 1 {
		t.Fatalf("diffs under the cap: %d listed, %d diffs", len(cs[0].view), cs[0].diffs)
	}
}

// The state's byte size is capped too: big metas switch to counts before
// a state outgrows the per-connection output budget.
func TestStateBytesCap(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTrackerWith(t, n, "A", c, Config{MaxStateBytes: 16 << 10})
	big := strings.Repeat("x", 1000)
	var cs []*client
	for i := 0; i < 20; i++ {
		cl := newClient()
		tr.Track("room:b", cl, Member{Conn: cl.conn, Version: phoenix.V2, JoinRef: phoenix.R("1"), ConnID: fmt.Sprint(i),
			Params: []byte(fmt.Sprintf(`{"user":"u%d","meta":{"bio":%q}}`, i, big))})
		cs = append(cs, cl)
	}
	waitSynced(t, tr, "room:b")
	tr.flush()
	for _, cl := range cs {
		for _, m := range cl.conn.Sent() {
			if m.Len() > 16<<10 {
				t.Fatalf("a %d-byte message over a 16 KiB state cap", m.Len())
			}
		}
		cl.read(t)
		if len(cl.view) != 0 || cl.count.Count != 20 {
			t.Fatalf("over the byte cap: %d listed, count %+v", len(cl.view), cl.count)
		}
	}
}

// The meta cap holds for the bytes sent: '&' is not HTML-escaped (six
// bytes each) after the size check, and one that only fits before
// escaping cannot grow past it.
func TestMetaMeasuredAsSent(t *testing.T) {
	amp := strings.Repeat("&", 1000)
	raw := testMeta(time.UnixMilli(1), []byte(`{"meta":{"n":"`+amp+`<>"}}`), "meta", 1024)
	if len(raw) > 1100 || !strings.Contains(string(raw), amp+"<>") {
		t.Fatalf("meta of 1,000 '&' is %d bytes: %.80s", len(raw), raw)
	}
	// Escaped on input: normalized, so it costs what it says.
	esc := strings.Repeat(`\u0026`, 200)
	raw = testMeta(time.UnixMilli(1), []byte(`{"meta":"`+esc+`"}`), "meta", 1024)
	if want := `{"meta":"` + strings.Repeat("&", 200) + `","online_at":1,"phx_ref":"FR1"}`; string(raw) != want {
		t.Fatalf("escaped meta: %.80s", raw)
	}
	// Over 1 KiB as sent ({"meta":"&…"} is 1,026 bytes): dropped.
	raw = testMeta(time.UnixMilli(1), []byte(`{"meta":"`+strings.Repeat("&", 1015)+`"}`), "meta", 1024)
	if string(raw) != `{"online_at":1,"phx_ref":"FR1"}` {
		t.Fatalf("a 1,026-byte meta was kept: %.80s", raw)
	}
	// Numbers keep their digits.
	raw = testMeta(time.UnixMilli(1), []byte(`{"meta":{"id":12345678901234567890}}`), "meta", 1024)
	if !strings.Contains(string(raw), `"id":12345678901234567890`) {
		t.Fatalf("number rewritten: %s", raw)
	}
	// Bus messages carry metas unescaped too.
	tr := New(Config{Bus: &fakeBus{n: newNet()}, manual: true})
	defer tr.Close()
	w := tr.encode(&wire{T: kindDiff, Joins: map[string]wireMetas{"a&b": {Metas: []json.RawMessage{json.RawMessage(`{"n":"&&"}`)}}}})
	if strings.Contains(string(w), `\u0026`) {
		t.Fatalf("bus message HTML-escaped: %s", w)
	}
}

// A connection re-joining one topic is limited to RejoinBurst joins at
// once, then one per RejoinInterval; others are not affected.
func TestRejoinLimit(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTrackerWith(t, n, "A", c, Config{RejoinBurst: 2, RejoinInterval: 5 * time.Second})
	other := newClient()
	tr.Track("room:r", other, other.member("room:r", "o"))
	waitSynced(t, tr, "room:r")
	a := newClient()
	join := func(inst any) bool {
		if tr.AdmitJoin("room:r", a.conn) != 0 {
			return false
		}
		tr.Track("room:r", inst, a.member("room:r", "a"))
		return true
	}
	if !join(1) {
		t.Fatal("first join refused")
	}
	tr.Untrack("room:r", 1)
	tr.housekeep(c.now())
	if !join(2) {
		t.Fatal("one quick re-join refused")
	}
	tr.Untrack("room:r", 2)
	c.add(300 * time.Millisecond)
	tr.housekeep(c.now()) // keeps what it has not refilled
	if wait := tr.AdmitJoin("room:r", a.conn); wait < 4*time.Second || wait > 5*time.Second {
		t.Fatalf("third join within the interval: wait %v", wait)
	}
	if tr.AdmitJoin("room:r", other.conn) != 0 || tr.AdmitJoin("room:other", a.conn) != 0 || tr.AdmitJoin("bench:r", a.conn) != 0 {
		t.Fatal("the limit leaked to another connection or topic")
	}
	c.add(5 * time.Second)
	if !join(3) {
		t.Fatal("re-join after the interval refused")
	}
	tr.Untrack("room:r", 3)
	// Refilled entries are dropped: the map holds only recent leavers.
	c.add(10 * time.Second)
	tr.housekeep(c.now())
	tr.mu.Lock()
	left := len(tr.recent)
	tr.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d refilled entries kept", left)
	}
}

// A killed gateway's members leave in one batched diff, and a capped
// room's members get a count instead.
func TestLeaveStormIsBatched(t *testing.T) {
	for _, capped := range []bool{false, true} {
		t.Run(fmt.Sprint("capped=", capped), func(t *testing.T) {
			n := newNet()
			c := &clock{t: time.Unix(1000, 0)}
			cfg := Config{MaxMembers: 1000}
			if capped {
				cfg.MaxMembers = 100
			}
			ta, _ := newTrackerWith(t, n, "A", c, cfg)
			tb, bb := newTrackerWith(t, n, "B", c, cfg)
			a := newClient()
			ta.Track("room:k", a, a.member("room:k", "alice"))
			waitSynced(t, ta, "room:k")
			locals := 1
			if capped {
				// Enough members stay on A to keep the room over 90 % of
				// the cap once B's are gone.
				for ; locals < 120; locals++ {
					cl := newClient()
					ta.Track("room:k", cl, cl.member("room:k", fmt.Sprintf("a%d", locals)))
				}
			}
			b0 := newClient()
			tb.Track("room:k", b0, b0.member("room:k", "b0"))
			waitSynced(t, tb, "room:k")
			for i := 1; i < 300; i++ {
				cl := newClient()
				tb.Track("room:k", cl, cl.member("room:k", fmt.Sprintf("b%d", i)))
			}
			tb.flush()
			ta.flush()
			a.read(t)
			if capped && a.count.Count != 300+locals || !capped && len(a.view) != 301 {
				t.Fatalf("before: %d listed, count %+v", len(a.view), a.count)
			}
			before := a.conn.Len()
			settle(ta, tb) // A's sync request to B, sent when it first heard of B, is answered
			n.mu.Lock()
			bb.dead = true
			n.mu.Unlock()
			c.add(3 * time.Second)
			ta.housekeep(c.now())
			ta.flush()
			a.read(t)
			if got := a.conn.Len() - before; got != 1 {
				t.Fatalf("300 leaves took %d messages", got)
			}
			if capped && (a.count.Count != locals || len(a.view) != 0) || !capped && a.keys() != "alice×1" {
				t.Fatalf("after: %s, count %+v", a.keys(), a.count)
			}
		})
	}
}
