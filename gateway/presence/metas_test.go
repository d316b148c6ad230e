package presence

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unique"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// A local meta is written out on demand: the size kept for the caps is the
// size written, and the refs keep their documented shape (F, the gateway
// id, a base-36 counter).
func TestMetaWrittenOnDemand(t *testing.T) {
	tr := &Tracker{cfg: Config{MaxMetaBytes: 1024}, refPrefix: refPrefix("gw\"1")}
	for _, m := range []meta{
		{metaFields: metaFields{ref: 1, online: 0}},
		{metaFields: metaFields{ref: 36, prev: 35, online: 1_700_000_000_123}},
		{metaFields: metaFields{app: unique.Make(`"name":"a"`), ref: 1 << 60, online: 42}},
		{raw: json.RawMessage(`{"phx_ref":"x"}`)},
	} {
		b := tr.appendMeta(nil, &m)
		if tr.metaSize(&m) != len(b) {
			t.Errorf("metaSize %d, written %d: %s", tr.metaSize(&m), len(b), b)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if m.raw == nil && m.ref == 36 && (v["phx_ref"] != `Fgw"110` || v["phx_ref_prev"] != `Fgw"1z`) {
			t.Errorf("refs %v", v)
		}
	}
}

// Members with the same app meta share one encoding of it, whatever
// their channel; the meta object sent is the one built before.
func TestMembersShareAppMeta(t *testing.T) {
	n := newNet()
	c := &clock{t: time.UnixMilli(5000)}
	tr, _ := newTracker(t, n, "A", c)
	params := []byte(`{"meta":{"status":"away","n":1}}`)
	for i, topic := range []string{"room:a", "room:a", "room:b"} {
		tr.Track(topic, i, Member{Conn: transporttest.NewConn(), Version: phoenix.V2, JoinRef: phoenix.R("1"),
			ConnID: "c" + string(rune('0'+i)), Params: params})
	}
	tr.mu.Lock()
	a, b := tr.channel("room:a").local.get(0), tr.channel("room:b").local.get(2)
	tr.mu.Unlock()
	if a.app != b.app || a.app.Value() != `"n":1,"status":"away"` {
		t.Fatalf("app metas %q %q not shared", a.app.Value(), b.app.Value())
	}
	if got, want := string(testMeta(time.UnixMilli(5000), params, "meta", 1024)), `{"n":1,"status":"away","online_at":5000,"phx_ref":"FR1"}`; got != want {
		t.Fatalf("meta %s, want %s", got, want)
	}
}

// appendString writes what encoding/json writes (without HTML escaping).
func TestAppendStringLikeEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "u1", "a b", `q"uote`, `back\slash`, "tab\t", "<&>", "é", "\u2028", "bad\xff", strings.Repeat("k", 300)} {
		if got, want := appendString(nil, s), encodeJSON(s); !bytes.Equal(got, want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}

// Bus messages with member sets are written directly, as encode would
// write the same wire value: they parse back, and begin with the mark by
// which a gateway skips its own messages unparsed.
func TestWireMessagesParse(t *testing.T) {
	n := newNet()
	c := &clock{t: time.UnixMilli(1)}
	tr, _ := newTracker(t, n, "gw-A", c)
	for i, key := range []string{"bob", "alice", "bob"} {
		tr.Track("room:w", i, Member{Conn: transporttest.NewConn(), Version: phoenix.V2, JoinRef: phoenix.R("1"), Sub: key})
	}
	tr.mu.Lock()
	ch := tr.channel("room:w")
	d := tr.encodeDiff(7, 3*time.Second, ch.bus)
	st := tr.encodeState(ch)
	tr.mu.Unlock()
	for _, b := range [][]byte{d, st} {
		if !bytes.Contains(b[:min(len(b), 64)], tr.selfMark) {
			t.Errorf("no self mark in %.64s", b)
		}
		var w wire
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		sets := w.Joins
		if w.T == kindState {
			sets = w.State
		}
		if w.GW != "gw-A" || w.TTL != 3000 && w.T == kindDiff || len(sets) != 2 || len(sets["bob"].Metas) != 2 || len(sets["alice"].Metas) != 1 {
			t.Errorf("%s parsed as %+v", b, w)
		}
	}
}
