package phx

import (
	"encoding/json"
	"slices"
	"sync"
)

// Meta is one tracked presence of a key (one tab, one device): its
// phx_ref and the whole meta object as the server sent it.
type Meta struct {
	PhxRef string
	Raw    json.RawMessage
}

// Decode unmarshals the meta object into v.
func (m Meta) Decode(v any) error { return json.Unmarshal(m.Raw, v) }

// PresenceEntry is one key (a user) and its metas.
type PresenceEntry struct {
	Key   string
	Metas []Meta
}

// maxQueuedDiffs bounds the diffs kept while waiting for a state.
const maxQueuedDiffs = 1024

// Presence mirrors a channel's Phoenix Presence: it applies presence_state
// and presence_diff the way phoenix.js's Presence class does. Diffs that
// arrive before the state of the current join are queued and applied
// after it; every (re)join gets a fresh state, which replaces what a
// disconnect made stale (keys gone meanwhile are reported as leaves).
//
// Callbacks run on the socket's reader goroutine; List is safe anywhere.
type Presence struct {
	// OnJoin is called for each key that gained metas: current is what
	// the key had before (nil: a new key), joined the new metas.
	OnJoin func(key string, current, joined []Meta)
	// OnLeave is called for each key that lost metas: remaining is what it
	// keeps (empty: the key is gone), left the metas removed.
	OnLeave func(key string, remaining, left []Meta)
	// OnSync is called after each state or diff is applied.
	OnSync func()

	mu      sync.Mutex
	state   map[string][]Meta
	joinRef string // the join whose state was applied
	queued  []json.RawMessage
}

// NewPresence returns an empty Presence; set its callbacks before joining.
func NewPresence() *Presence { return &Presence{state: map[string][]Meta{}} }

// List returns every key and its metas, sorted by key.
func (p *Presence) List() []PresenceEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PresenceEntry, 0, len(p.state))
	for k, ms := range p.state {
		out = append(out, PresenceEntry{Key: k, Metas: slices.Clone(ms)})
	}
	slices.SortFunc(out, func(a, b PresenceEntry) int {
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
	return out
}

// Get returns key's metas (nil when absent).
func (p *Presence) Get(key string) []Meta {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.state[key])
}

// handle takes a channel message; joinRef is the channel's current join.
func (p *Presence) handle(event string, payload json.RawMessage, joinRef string) {
	switch event {
	case "presence_state":
		st, ok := decodePresenceMap(payload)
		if !ok {
			return
		}
		p.mu.Lock()
		p.joinRef = joinRef
		var calls []func()
		calls = p.syncStateLocked(st, calls)
		for _, d := range p.queued {
			calls = p.applyDiffLocked(d, calls)
		}
		p.queued = nil
		p.mu.Unlock()
		p.run(calls)
	case "presence_diff":
		p.mu.Lock()
		if p.joinRef != joinRef {
			// No state yet for this join: keep the diff for after it.
			if len(p.queued) == maxQueuedDiffs {
				p.queued = p.queued[1:]
			}
			p.queued = append(p.queued, payload)
			p.mu.Unlock()
			return
		}
		calls := p.applyDiffLocked(payload, nil)
		p.mu.Unlock()
		p.run(calls)
	}
}

func (p *Presence) run(calls []func()) {
	for _, f := range calls {
		f()
	}
	if p.OnSync != nil {
		p.OnSync()
	}
}

func (p *Presence) applyDiffLocked(payload json.RawMessage, calls []func()) []func() {
	var d struct {
		Joins  json.RawMessage `json:"joins"`
		Leaves json.RawMessage `json:"leaves"`
	}
	if json.Unmarshal(payload, &d) != nil {
		return calls
	}
	joins, _ := decodePresenceMap(d.Joins)
	leaves, _ := decodePresenceMap(d.Leaves)
	return p.syncDiffLocked(joins, leaves, calls)
}

// syncStateLocked replaces the state with st, as joins and leaves of the
// difference.
func (p *Presence) syncStateLocked(st map[string][]Meta, calls []func()) []func() {
	joins, leaves := map[string][]Meta{}, map[string][]Meta{}
	for key, cur := range p.state {
		if _, ok := st[key]; !ok {
			leaves[key] = cur
		}
	}
	for key, metas := range st {
		cur, ok := p.state[key]
		if !ok {
			joins[key] = metas
			continue
		}
		if j := without(metas, cur); len(j) > 0 {
			joins[key] = j
		}
		if l := without(cur, metas); len(l) > 0 {
			leaves[key] = l
		}
	}
	return p.syncDiffLocked(joins, leaves, calls)
}

// syncDiffLocked applies joins (merged into the key's metas, older ones
// kept first) and leaves (metas removed by phx_ref, empty keys deleted).
func (p *Presence) syncDiffLocked(joins, leaves map[string][]Meta, calls []func()) []func() {
	for _, key := range sortedKeys(joins) {
		joined := joins[key]
		cur, had := p.state[key]
		merged := append(without(cur, joined), joined...)
		p.state[key] = merged
		if p.OnJoin != nil {
			var before []Meta
			if had {
				before = slices.Clone(cur)
			}
			calls = append(calls, func() { p.OnJoin(key, before, joined) })
		}
	}
	for _, key := range sortedKeys(leaves) {
		left := leaves[key]
		cur, ok := p.state[key]
		if !ok {
			continue
		}
		remaining := without(cur, left)
		if len(remaining) == 0 {
			delete(p.state, key)
		} else {
			p.state[key] = remaining
		}
		if p.OnLeave != nil {
			calls = append(calls, func() { p.OnLeave(key, slices.Clone(remaining), left) })
		}
	}
	return calls
}

// without returns the metas of a whose phx_ref is not in b (a new slice).
func without(a, b []Meta) []Meta {
	out := make([]Meta, 0, len(a))
	for _, m := range a {
		if !slices.ContainsFunc(b, func(n Meta) bool { return n.PhxRef == m.PhxRef }) {
			out = append(out, m)
		}
	}
	return out
}

func sortedKeys(m map[string][]Meta) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodePresenceMap reads {"key": {"metas": [{"phx_ref": …, …}, …]}, …}.
func decodePresenceMap(raw json.RawMessage) (map[string][]Meta, bool) {
	var m map[string]struct {
		Metas []json.RawMessage `json:"metas"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return map[string][]Meta{}, false
	}
	out := make(map[string][]Meta, len(m))
	for key, e := range m {
		metas := make([]Meta, 0, len(e.Metas))
		for _, r := range e.Metas {
			var ref struct {
				PhxRef string `json:"phx_ref"`
			}
			_ = json.Unmarshal(r, &ref) // a meta without a phx_ref is kept, keyed by ""
			metas = append(metas, Meta{PhxRef: ref.PhxRef, Raw: r})
		}
		out[key] = metas
	}
	return out, true
}
