package phx

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// recorder logs a Presence's callbacks as "join u1 [a]" etc.
func recorder(p *Presence) *[]string {
	var log []string
	refs := func(ms []Meta) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.PhxRef)
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	p.OnJoin = func(key string, cur, joined []Meta) {
		log = append(log, fmt.Sprintf("join %s %s+%s", key, refs(cur), refs(joined)))
	}
	p.OnLeave = func(key string, remaining, left []Meta) {
		log = append(log, fmt.Sprintf("leave %s %s-%s", key, refs(remaining), refs(left)))
	}
	p.OnSync = func() {
		var keys []string
		for _, e := range p.List() {
			keys = append(keys, e.Key+refs(e.Metas))
		}
		log = append(log, "sync "+strings.Join(keys, ","))
	}
	return &log
}

func metas(refs ...string) string {
	var ms []string
	for _, r := range refs {
		ms = append(ms, fmt.Sprintf(`{"phx_ref":%q,"online_at":1}`, r))
	}
	return `{"metas":[` + strings.Join(ms, ",") + `]}`
}

func expect(t *testing.T, log *[]string, want ...string) {
	t.Helper()
	if got := strings.Join(*log, " | "); got != strings.Join(want, " | ") {
		t.Fatalf("got\n  %s\nwant\n  %s", got, strings.Join(want, " | "))
	}
	*log = nil
}

// The chain phoenix.js produces (state u1, diff join u2, diff leave u1).
func TestPresenceStateThenDiffs(t *testing.T) {
	p := NewPresence()
	log := recorder(p)
	p.handle("presence_state", json.RawMessage(`{"u1":`+metas("a")+`}`), "1")
	expect(t, log, "join u1 []+[a]", "sync u1[a]")
	p.handle("presence_diff", json.RawMessage(`{"joins":{"u2":`+metas("b")+`},"leaves":{}}`), "1")
	expect(t, log, "join u2 []+[b]", "sync u1[a],u2[b]")
	p.handle("presence_diff", json.RawMessage(`{"joins":{},"leaves":{"u1":`+metas("a")+`}}`), "1")
	expect(t, log, "leave u1 []-[a]", "sync u2[b]")
	// A second tab of u2, then an update of the first (leave old meta,
	// join new one with a new phx_ref): older metas stay first.
	p.handle("presence_diff", json.RawMessage(`{"joins":{"u2":`+metas("c")+`},"leaves":{}}`), "1")
	expect(t, log, "join u2 [b]+[c]", "sync u2[b c]")
	p.handle("presence_diff", json.RawMessage(`{"joins":{"u2":`+metas("b2")+`},"leaves":{"u2":`+metas("b")+`}}`), "1")
	expect(t, log, "join u2 [b c]+[b2]", "leave u2 [c b2]-[b]", "sync u2[c b2]")
	var m struct {
		OnlineAt int `json:"online_at"`
	}
	if got := p.Get("u2"); len(got) != 2 || got[1].Decode(&m) != nil || m.OnlineAt != 1 {
		t.Fatalf("Get: %+v", got)
	}
	// A leave for an unknown key is ignored.
	p.handle("presence_diff", json.RawMessage(`{"joins":{},"leaves":{"zz":`+metas("q")+`}}`), "1")
	expect(t, log, "sync u2[c b2]")
}

// Diffs before the current join's state are queued, then applied after it
// (a rejoin: the old join's state must not absorb the new join's diffs).
func TestPresenceQueuesDiffsUntilState(t *testing.T) {
	p := NewPresence()
	log := recorder(p)
	p.handle("presence_diff", json.RawMessage(`{"joins":{"u2":`+metas("b")+`},"leaves":{}}`), "1")
	expect(t, log)
	p.handle("presence_state", json.RawMessage(`{"u1":`+metas("a")+`}`), "1")
	expect(t, log, "join u1 []+[a]", "join u2 []+[b]", "sync u1[a],u2[b]")

	// Reconnect: join 2. Its diffs wait for its state; the state replaces
	// the old one (u1 gone while we were away: a leave).
	p.handle("presence_diff", json.RawMessage(`{"joins":{"u3":`+metas("c")+`},"leaves":{}}`), "2")
	expect(t, log)
	p.handle("presence_state", json.RawMessage(`{"u2":`+metas("b")+`}`), "2")
	expect(t, log, "leave u1 []-[a]", "join u3 []+[c]", "sync u2[b],u3[c]")
}

func TestPresenceBoundedQueueAndBadInput(t *testing.T) {
	p := NewPresence()
	for i := 0; i < maxQueuedDiffs+10; i++ {
		p.handle("presence_diff", json.RawMessage(`{"joins":{},"leaves":{}}`), "1")
	}
	if len(p.queued) != maxQueuedDiffs {
		t.Fatalf("%d diffs queued", len(p.queued))
	}
	p.handle("presence_state", json.RawMessage(`not json`), "1")
	p.handle("presence_state", json.RawMessage(`{}`), "1")
	if len(p.queued) != 0 || len(p.List()) != 0 {
		t.Fatalf("queued %d, list %v", len(p.queued), p.List())
	}
}
