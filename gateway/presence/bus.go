package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"
)

// Between gateways: the presence messages of a channel over the broker
// port (diff, hb, sync, state, bye; see the package doc) and what a
// gateway keeps of every other gateway's members.

// Bus message kinds (the "t" field).
const (
	kindDiff  = "diff"  // local joins/leaves since the previous diff (seq+1)
	kindHB    = "hb"    // heartbeat: still here, my latest seq
	kindState = "state" // full local state as of seq (answer to a sync)
	kindSync  = "sync"  // request: send me your state (to: one gateway, or all)
	kindBye   = "bye"   // this gateway stops serving the channel
)

// remoteMeta is a remote gateway's meta, as it sent it.
type remoteMeta struct {
	key string
	raw json.RawMessage
}

func (m remoteMeta) meta() meta { return meta{key: m.key, raw: m.raw} }

type remoteGW struct {
	members  map[string]remoteMeta // by phx_ref
	seq      uint64                // latest diff seq applied
	synced   bool                  // members came from a state (then diffs)
	log      []*wire               // diffs applied while not synced
	lastSeen time.Time
	ttl      time.Duration
	asked    time.Time // last directed sync request
}

// dropRemote forgets a gateway's members of ch: leaves for local clients
// (t.mu held).
func (t *Tracker) dropRemote(ch *chanState, id string) {
	g := ch.remote[id]
	delete(ch.remote, id)
	for _, m := range g.members {
		t.changed(ch, false, m.meta(), false)
	}
}

// start subscribes to the channel's presence traffic and asks the other
// gateways for their state; members tracked meanwhile then get
// presence_state. On failure they get the local state and the subscription
// is retried by housekeep.
func (t *Tracker) start(ch *chanState) {
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	sub, err := t.cfg.Bus.PresenceSubscribe(ctx, ch.topic, func(msg []byte, reply func([]byte) error) {
		t.receive(ch, msg, reply)
	})
	t.mu.Lock()
	ch.subscribing = false
	if t.channel(ch.topic) != ch {
		t.mu.Unlock()
		if sub != nil {
			sub.Unsubscribe()
		}
		return
	}
	if err != nil && t.ctx.Err() == nil { // not because Close cancelled it
		t.cfg.Logger.Warn("presence: subscribe failed", "topic", ch.topic, "err", err)
	} else if err == nil {
		ch.sub = sub
	}
	t.mu.Unlock()
	if err == nil {
		t.request(ctx, ch, "")
	}
	t.mu.Lock()
	ch.syncing = false
	t.markDirty(ch) // the next flush sends the held-back states
	t.mu.Unlock()
}

// request asks the other gateways (or one) for their local state of ch
// and applies the answers.
func (t *Tracker) request(ctx context.Context, ch *chanState, to string) {
	req := t.encode(&wire{T: kindSync, To: to})
	err := t.cfg.Bus.PresenceRequest(ctx, ch.topic, req, t.cfg.SyncWindow, func(b []byte) bool {
		t.receive(ch, b, nil)
		return true
	})
	if err != nil {
		t.cfg.Logger.Debug("presence: sync request failed", "topic", ch.topic, "err", err)
	}
}

// wire is a message between gateways. Member sets use the Phoenix shape
// ({key: {metas: [...]}}), so `nats sub 'fabric_presence.>'` reads like
// the client side.
type wire struct {
	T      string               `json:"t"`
	GW     string               `json:"gw"`
	Seq    uint64               `json:"seq,omitempty"`
	TTL    int64                `json:"ttl,omitempty"` // ms: the sender's expiry
	To     string               `json:"to,omitempty"`
	Joins  map[string]wireMetas `json:"joins,omitempty"`
	Leaves map[string]wireMetas `json:"leaves,omitempty"`
	State  map[string]wireMetas `json:"state,omitempty"`
}

type wireMetas struct {
	Metas []json.RawMessage `json:"metas"`
}

func (t *Tracker) encode(w *wire) []byte {
	w.GW = t.id
	return encodeJSON(w)
}

// appendWireHead writes the start of a message with member sets, as
// encode would: `{"t":kind,"gw":id,"seq":…,"ttl":…`.
func (t *Tracker) appendWireHead(dst []byte, kind string, seq uint64, ttl time.Duration) []byte {
	dst = append(dst, `{"t":"`...)
	dst = append(dst, kind...)
	dst = append(dst, '"')
	dst = append(dst, t.selfMark[:len(t.selfMark)-1]...) // `,"gw":"<id>"`
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"ttl":`...)
	return strconv.AppendInt(dst, ttl.Milliseconds(), 10)
}

// encodeDiff is a diff message with this gateway's changes d (t.mu held).
func (t *Tracker) encodeDiff(seq uint64, ttl time.Duration, d diff) []byte {
	b := t.appendWireHead(t.buf[:0], kindDiff, seq, ttl)
	b = append(b, `,"joins":`...)
	b = t.appendGroups(b, d.joins)
	b = append(b, `,"leaves":`...)
	b = t.appendGroups(b, d.leaves)
	b = append(b, '}')
	t.keepBuf(b)
	return bytes.Clone(b)
}

// encodeState is the answer to a sync: this gateway's members of ch as
// of its latest diff (t.mu held).
func (t *Tracker) encodeState(ch *chanState) []byte {
	b := t.appendWireHead(t.buf[:0], kindState, ch.seq, ch.opts.Value().TTL)
	b = append(b, `,"state":`...)
	b = t.localState(b, ch)
	b = append(b, '}')
	t.keepBuf(b)
	return bytes.Clone(b)
}

// receive handles one bus message for ch (a subscription or a sync answer).
func (t *Tracker) receive(ch *chanState, data []byte, reply func([]byte) error) {
	// The subscription brings back this gateway's own messages: skip them
	// unparsed (encode writes "t" then "gw" first), a diff of a join storm
	// being as big as the storm.
	if head := data[:min(len(data), 64)]; bytes.Contains(head, t.selfMark) {
		return
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil || w.GW == "" || w.GW == t.id {
		return
	}
	t.mu.Lock()
	if t.channel(ch.topic) != ch {
		t.mu.Unlock()
		return
	}
	if w.T == kindSync {
		if reply == nil || !(w.To == t.id || (w.To == "" && ch.local.len() > 0)) {
			t.mu.Unlock()
			return
		}
		ans := t.encodeState(ch)
		t.mu.Unlock()
		_ = reply(ans) // the asker retries on its next sync
		return
	}
	now := t.cfg.now()
	g := ch.remote[w.GW]
	if w.T == kindBye {
		if g != nil {
			t.dropRemote(ch, w.GW)
		}
		t.mu.Unlock()
		return
	}
	if g == nil {
		g = &remoteGW{members: map[string]remoteMeta{}}
		if ch.remote == nil {
			ch.remote = map[string]*remoteGW{}
		}
		ch.remote[w.GW] = g
	}
	g.lastSeen = now
	g.ttl = ch.opts.Value().TTL
	if w.TTL > 0 {
		g.ttl = time.Duration(w.TTL) * time.Millisecond
	}
	ask := false
	switch w.T {
	case kindDiff:
		if g.synced && w.Seq <= g.seq {
			break // already in the state we applied
		}
		if g.synced && w.Seq > g.seq+1 {
			g.synced = false // missed a diff: ask for the state
		}
		if !g.synced {
			if len(g.log) < 1024 {
				g.log = append(g.log, &w)
			}
			ask = true
		}
		t.applyDiff(ch, g, &w)
		g.seq = max(g.seq, w.Seq)
	case kindHB:
		if w.Seq > g.seq {
			g.synced = false // missed a diff
		}
		ask = !g.synced
	case kindState:
		t.applyState(ch, g, &w)
	}
	if ask && !ch.syncing && now.Sub(g.asked) >= time.Second {
		g.asked = now
		t.background(func() {
			ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
			defer cancel()
			t.request(ctx, ch, w.GW)
		})
	}
	t.mu.Unlock()
}

func refOf(raw json.RawMessage) string {
	var r struct {
		Ref string `json:"phx_ref"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	return r.Ref
}

// applyDiff applies a remote diff: joins then leaves, each only if it
// changes the gateway's set, so repeated or reordered messages are
// harmless (t.mu held).
func (t *Tracker) applyDiff(ch *chanState, g *remoteGW, w *wire) {
	for key, ms := range w.Joins {
		for _, raw := range ms.Metas {
			ref := refOf(raw)
			if _, ok := g.members[ref]; ok || ref == "" {
				continue
			}
			m := remoteMeta{key: key, raw: raw}
			g.members[ref] = m
			t.changed(ch, true, m.meta(), false)
		}
	}
	for _, ms := range w.Leaves {
		for _, raw := range ms.Metas {
			ref := refOf(raw)
			if m, ok := g.members[ref]; ok {
				delete(g.members, ref)
				t.changed(ch, false, m.meta(), false)
			}
		}
	}
}

// applyState replaces a gateway's set with its state as of w.Seq. A state
// older than diffs already applied (answers travel apart from the channel
// subject) is completed with the diffs logged since (t.mu held).
func (t *Tracker) applyState(ch *chanState, g *remoteGW, w *wire) {
	if w.Seq < g.seq && g.synced {
		return // a late answer: what we have is newer
	}
	next := &remoteGW{members: map[string]remoteMeta{}}
	for key, ms := range w.State {
		for _, raw := range ms.Metas {
			if ref := refOf(raw); ref != "" {
				next.members[ref] = remoteMeta{key: key, raw: raw}
			}
		}
	}
	for _, d := range g.log {
		if d.Seq > w.Seq {
			for key, ms := range d.Joins {
				for _, raw := range ms.Metas {
					if ref := refOf(raw); ref != "" {
						next.members[ref] = remoteMeta{key: key, raw: raw}
					}
				}
			}
			for _, ms := range d.Leaves {
				for _, raw := range ms.Metas {
					delete(next.members, refOf(raw))
				}
			}
		}
	}
	for ref, m := range g.members {
		if _, ok := next.members[ref]; !ok {
			t.changed(ch, false, m.meta(), false)
		}
	}
	for ref, m := range next.members {
		if _, ok := g.members[ref]; !ok {
			t.changed(ch, true, m.meta(), false)
		}
	}
	g.members = next.members
	g.synced = true
	g.log = nil
	g.seq = max(g.seq, w.Seq)
}
