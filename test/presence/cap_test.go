package presence

import (
	"encoding/json"
	"github.com/fabric-rt/fabric/internal/testkit"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

func startNS(t *testing.T, ns namespace.Namespace) *app.App {
	t.Helper()
	a := testkit.StartApp(t, stormConfig(t, ns))
	return a
}

// waitCount waits for a fabric:presence_count of want on topic.
func waitCount(t *testing.T, p *phxnode.Puppet, topic string, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	last := -1
	for {
		e, ok := p.Next(time.Until(deadline), phxnode.IsMsg(topic, "fabric:presence_count"))
		if !ok {
			t.Fatalf("no fabric:presence_count %d on %s; last %d\nbuffered:\n%v", want, topic, last, p.Buffered())
		}
		var c struct{ Count, Metas int }
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			t.Fatalf("count payload %s: %v", e.Payload, err)
		}
		if last = c.Count; last == want {
			return
		}
	}
}

// phoenix.js's Presence over and under the member cap: over it the list
// empties (onSync fires with no members) and fabric:presence_count
// carries the size; back under 90 % of the cap the full list returns.
func TestPhoenixPresenceOverTheCap(t *testing.T) {
	a := startNS(t, namespace.Namespace{Presence: true, PresenceTTL: ttl, PresenceMaxMembers: 3})
	var ps []*phxnode.Puppet
	users := []string{"u1", "u2", "u3", "u4"}
	for i, u := range users[:3] {
		p := connect(t, a.HTTPAddr())
		join(t, p, "room:cap", u, u)
		ps = append(ps, p)
		want := map[int]string{0: "u1×1", 1: "u1×1 u2×1", 2: "u1×1 u2×1 u3×1"}[i]
		waitSync(t, p, "room:cap", want, wait)
	}
	waitSync(t, ps[0], "room:cap", "u1×1 u2×1 u3×1", wait)
	// The fourth member puts the channel over the cap.
	p4 := connect(t, a.HTTPAddr())
	join(t, p4, "room:cap", "u4", "u4")
	ps = append(ps, p4)
	for _, p := range ps {
		waitSync(t, p, "room:cap", "", wait)
		waitCount(t, p, "room:cap", 4)
	}
	// Two leave: 2 of 3 is under 90 %, everyone left gets the list.
	ps[3].Leave("room:cap")
	ps[2].Leave("room:cap")
	for _, p := range ps[:2] {
		waitSync(t, p, "room:cap", "u1×1 u2×1", wait)
	}
}

// A connection re-joining one topic over and over is refused with
// rate_limited; phoenix.js's own rejoin back-off then gets it in once the
// interval allows.
func TestPhoenixRejoinLimit(t *testing.T) {
	a := start(t, "")
	other := connect(t, a.HTTPAddr())
	join(t, other, "room:rj", "other", "Other")
	p := connect(t, a.HTTPAddr())
	join(t, p, "room:rj", "flap", "Flap") // the first join
	p.Leave("room:rj")
	join(t, p, "room:rj", "flap", "Flap") // one quick re-join is fine
	p.Leave("room:rj")
	r := p.JoinOpts("room:rj", map[string]any{"user": "flap"}, map[string]any{"presence": true})
	if r.Status != "error" {
		t.Fatalf("third join within the interval: %s %s", r.Status, r.Response)
	}
	var resp struct {
		Reason string `json:"reason"`
		Retry  int    `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(r.Response, &resp); err != nil || resp.Reason != "rate_limited" || resp.Retry <= 0 {
		t.Fatalf("refusal %s", r.Response)
	}
	// phoenix.js retries by itself (1 s, 2 s, 5 s, …) and gets in.
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, ok := p.Next(time.Until(deadline), func(e phxnode.Event) bool { return e.Ev == "join_reply" && e.Topic == "room:rj" })
		if !ok {
			t.Fatalf("phoenix.js never got back in\n%v", p.Buffered())
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(e.Raw, &st)
		if st.Status == "ok" {
			break
		}
	}
	waitSync(t, other, "room:rj", "flap×1 other×1", wait)
}

// A LongPoll member gets the shared state joined into one message; its
// list matches a WebSocket member's of the same wave.
func TestPhoenixPresenceLongPollAndWebSocket(t *testing.T) {
	a := start(t, "")
	lp := phxnode.Start(t)
	if err := lp.Connect(wsURL(a.HTTPAddr()), nil, map[string]any{"longpoll": true}); err != nil {
		t.Fatalf("longpoll connect: %v", err)
	}
	ws := connect(t, a.HTTPAddr())
	join(t, ws, "room:mixed", "ws", "WS")
	join(t, lp, "room:mixed", "lp", "LP")
	for _, p := range []*phxnode.Puppet{ws, lp} {
		waitSync(t, p, "room:mixed", "lp×1 ws×1", wait)
	}
}
