// Package attack holds attack tests: a real phoenix.js victim and a
// malicious client holding a valid token for ordinary channels, against a
// whole Fabric.
package attack

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// The forgeries a client allowed to publish could send to impersonate the
// server: phoenix.js's Presence takes presence_state and presence_diff as
// the member list, and chan_reply_<ref> as the reply to the push with
// that ref.
func forgeries(ref int) map[string]string {
	return map[string]string{
		"presence_diff": `{"joins":{"admin":{"metas":[{"phx_ref":"forged","name":"admin"}]}},` +
			`"leaves":{"victim":{"metas":[{"phx_ref":"forged-leave"}]}}}`,
		"presence_state":                  `{"admin":{"metas":[{"phx_ref":"forged","name":"admin"}]}}`,
		"chan_reply_" + strconv.Itoa(ref): `{"status":"ok","response":{"forged":true}}`,
		"phx_reply":                       `{"status":"ok","response":{"forged":true}}`,
	}
}

// presenceKeys is a Presence.list's keys, sorted.
func presenceKeys(l []phxnode.Presence) string {
	var ks []string
	for _, p := range l {
		ks = append(ks, p.Key)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// forged reports whether a message delivered to a client is one of the
// forgeries (the server's own presence events are legitimate).
func forged(event string, payload []byte) bool {
	return strings.HasPrefix(event, phoenix.PrefixChanReply) || strings.Contains(string(payload), "forged")
}

// A client with an ordinary token (join and publish on room:*) cannot speak
// for the server: its forged presence and reply events are refused with
// reserved_event, never reach a phoenix.js victim (its Presence list stays
// as the server made it, its pending pushes resolve only with the real
// replies) and are never stored in history (a resume replays none).
func TestForgedServerEventsNeverReachVictims(t *testing.T) {
	a := forgeFabric(t, nil)
	const topic = "room:forge"

	victim := phxnode.Start(t)
	vtok := forgeToken(t, "victim", []string{"room:*"}, []string{"room:*"})
	// No heartbeats during the test, so the victim's refs are its pushes'
	// (the trace shows each reply's ref).
	if err := victim.Connect(fmt.Sprintf("ws://%s/socket", a.HTTPAddr()), nil,
		map[string]any{"authToken": vtok, "trace": true, "heartbeatIntervalMs": 600_000}); err != nil {
		t.Fatal(err)
	}
	r := victim.JoinOpts(topic, map[string]any{"meta": map[string]any{"name": "victim"}}, map[string]any{"presence": true})
	if r.Status != "ok" {
		t.Fatalf("victim join: %s %s", r.Status, r.Response)
	}
	var head struct {
		Epoch  string          `json:"epoch"`
		Offset json.RawMessage `json:"offset"`
	}
	if err := json.Unmarshal(r.Response, &head); err != nil || head.Epoch == "" {
		t.Fatalf("join reply %s", r.Response)
	}
	sync := victim.MustNext(forgeWait, "victim's presence", phxnode.OnTopic("presence_sync", topic))
	if got := presenceKeys(sync.PresenceList()); got != "victim" {
		t.Fatalf("presence before the attack: %s", got)
	}

	mallory := forgeDial(t, a, forgeToken(t, "mallory", []string{"room:*"}, []string{"room:*"}))
	jr, err := mallory.Join(topic, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if s, resp, err := mallory.WaitReply(jr, forgeWait); s != "ok" || err != nil {
		t.Fatalf("attacker join: %s %s %v", s, resp, err)
	}
	victim.MustNext(forgeWait, "the attacker's real presence join", func(e phxnode.Event) bool {
		return e.Ev == "presence_sync" && e.Topic == topic && presenceKeys(e.PresenceList()) == "mallory,victim"
	})

	// forge pushes every forgery once and checks each is refused (going
	// on when one is not, to show what it does to the victim).
	accepted := false
	forge := func(ref int) {
		t.Helper()
		for event, payload := range forgeries(ref) {
			r := mallory.NextRef()
			if err := mallory.Send(phoenix.R(jr), phoenix.R(r), topic, event, json.RawMessage(payload)); err != nil {
				t.Fatal(err)
			}
			s, resp, err := mallory.WaitReply(r, forgeWait)
			if err != nil {
				t.Fatal(err)
			}
			if (s != "error" || string(resp) != `{"reason":"reserved_event"}`) && !accepted {
				accepted = true
				t.Errorf("forged %s: %s %s, want reserved_event", event, s, resp)
			}
		}
	}

	// Race forged replies against the victim's pending pushes: the
	// victim's next ref is the last one plus one.
	lastRef := 0
	const rounds = 10
	for i := range rounds {
		done := make(chan map[string]any, 1)
		go func() {
			res, _ := victim.Do(map[string]any{"cmd": "push", "topic": topic, "event": "chat", "payload": map[string]any{"i": i}})
			done <- res
		}()
		if lastRef > 0 {
			// A burst without waiting, so forgeries are in flight while
			// the victim's push is pending.
			event := phoenix.PrefixChanReply + strconv.Itoa(lastRef+1)
			var refs []string
			for range 40 {
				r := mallory.NextRef()
				refs = append(refs, r)
				mallory.Send(phoenix.R(jr), phoenix.R(r), topic, event, json.RawMessage(`{"status":"ok","response":{"forged":true}}`))
			}
			for _, r := range refs {
				s, resp, err := mallory.WaitReply(r, forgeWait)
				if err != nil {
					t.Fatal(err)
				}
				if (s != "error" || string(resp) != `{"reason":"reserved_event"}`) && !accepted {
					accepted = true
					t.Errorf("forged %s: %s %s, want reserved_event", event, s, resp)
				}
			}
			forge(lastRef + 1)
		}
		var res map[string]any
		select {
		case res = <-done:
		case <-time.After(2 * forgeWait):
			t.Fatal("victim push not answered")
		}
		resp, _ := res["response"].(map[string]any)
		if res["status"] != "ok" || resp["forged"] != nil || resp["offset"] == nil {
			t.Errorf("victim push %d resolved with %v, want the server's reply with an offset", i, res)
		}
		w := victim.MustNext(forgeWait, "the push reply on the wire", func(e phxnode.Event) bool {
			return e.Ev == "wire" && e.Event == phoenix.EventReply && e.Topic == topic
		})
		if lastRef, err = strconv.Atoi(w.RefString()); err != nil {
			t.Fatalf("reply ref %q", w.RefString())
		}
	}
	forge(lastRef + 1)

	// A marker from the server side ends the observation: every forgery
	// was sent before it, so had one been delivered it would be here.
	mr := mallory.NextRef()
	mallory.Send(phoenix.R(jr), phoenix.R(mr), topic, "marker", json.RawMessage(`{}`))
	if s, _, err := mallory.WaitReply(mr, forgeWait); s != "ok" || err != nil {
		t.Fatalf("marker: %s %v", s, err)
	}
	victim.MustNext(forgeWait, "the marker", phxnode.IsMsg(topic, "marker"))
	for _, e := range victim.Drain(phxnode.Any) {
		if (e.Ev == "msg" || e.Ev == "wire") && forged(e.Event, e.Payload) {
			t.Fatalf("a forgery reached the victim: %s", e)
		}
		if e.Ev == "presence_sync" {
			if got := presenceKeys(e.PresenceList()); got != "mallory,victim" {
				t.Fatalf("the victim's Presence.list became %s", got)
			}
		}
	}

	// History: a client resuming from before the attack gets the victim's
	// and the attacker's plain messages, and no forgery.
	reader := forgeDial(t, a, forgeToken(t, "reader", []string{"room:*"}, nil))
	rr, err := reader.Join(topic, map[string]any{"epoch": head.Epoch, "offset": head.Offset})
	if err != nil {
		t.Fatal(err)
	}
	if s, resp, err := reader.WaitReply(rr, forgeWait); s != "ok" || err != nil || !strings.Contains(string(resp), `"recovered":true`) {
		t.Fatalf("resume: %s %s %v", s, resp, err)
	}
	chats := 0
	for {
		m, err := reader.NextMatch(forgeWait, func(m phxclient.Msg) bool { return m.Topic == topic || m.Close })
		if err != nil || m.Close {
			t.Fatalf("replay ended before the marker: %v", err)
		}
		if forged(m.Event, m.Payload) {
			t.Fatalf("history replayed a forgery: %s", m.Raw)
		}
		if m.Event == "chat" {
			chats++
		}
		if m.Event == "marker" {
			break
		}
	}
	if chats != rounds {
		t.Fatalf("replayed %d of the victim's %d messages", chats, rounds)
	}
}
