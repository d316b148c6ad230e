package presence

import (
	"encoding/json"
	"testing"
	"time"
)

// Local is the control API's view of one gateway: its own members only,
// grouped by key with one meta per tracked instance, as Phoenix Presence
// lists them; nothing for a topic without local members.
func TestLocalListsOnlyThisGatewaysMembers(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	a, _ := newTracker(t, n, "A", c)
	b, _ := newTracker(t, n, "B", c)
	if a.ID() != "A" || b.ID() != "B" {
		t.Fatalf("ids %q %q", a.ID(), b.ID())
	}
	if _, ok := a.Local("room:1"); ok {
		t.Fatal("a topic nobody joined has local members")
	}
	tab1, tab2, other := newClient(), newClient(), newClient()
	a.Track("room:1", tab1, tab1.member("room:1", "u1"))
	a.Track("room:1", tab2, tab2.member("room:1", "u1"))
	b.Track("room:1", other, other.member("room:1", "u2"))
	settle(a, b)

	l, ok := a.Local("room:1")
	if !ok || len(l) != 1 || len(l["u1"]) != 2 {
		t.Fatalf("a's members: %v %v", l, ok)
	}
	refs := map[string]bool{}
	for _, raw := range l["u1"] {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("meta %s: %v", raw, err)
		}
		ref, _ := m["phx_ref"].(string)
		if ref == "" || m["name"] != "U1" {
			t.Fatalf("meta %s: want a phx_ref and the app's fields", raw)
		}
		refs[ref] = true
	}
	if len(refs) != 2 {
		t.Fatalf("two tabs share a phx_ref: %v", l["u1"])
	}
	if l, ok := b.Local("room:1"); !ok || len(l) != 1 || len(l["u2"]) != 1 {
		t.Fatalf("b's members: %v %v", l, ok)
	}

	a.Untrack("room:1", tab1)
	a.Untrack("room:1", tab2)
	settle(a, b)
	if l, ok := a.Local("room:1"); ok {
		t.Fatalf("members left, still listed: %v", l)
	}
}
