package presence

import (
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Towards local clients: the channel's presence_state, batched
// presence_diff and, over the caps, the counts, encoded once and shared.

// diff accumulates joins and leaves in arrival order; they are grouped
// by key (the Phoenix shape) when encoded.
type diff struct {
	joins, leaves []meta
}

func (d *diff) add(joins bool, m meta) {
	if joins {
		d.joins = append(d.joins, m)
	} else {
		d.leaves = append(d.leaves, m)
	}
}

func (d *diff) empty() bool { return len(d.joins) == 0 && len(d.leaves) == 0 }

// reset empties d, keeping a small backing array for the next batch of
// a busy channel. A storm's is let go, and so is an array of one: the
// batch of a lone member's join, which an idle one-member channel (one
// channel per user) would otherwise hold for as long as it lives.
func (d *diff) reset() {
	for _, p := range []*[]meta{&d.joins, &d.leaves} {
		clear(*p)
		*p = (*p)[:0]
		if cap(*p) > 64 || cap(*p) <= 1 {
			*p = nil
		}
	}
}

// state is the channel's full presence in the Phoenix shape followed by
// "]" (the end of a v2 message: see flush), encoded in one allocation of
// the message itself (t.mu held).
func (t *Tracker) state(ch *chanState) []byte {
	ms := t.scratch[:0]
	for l := range ch.local.all() {
		ms = append(ms, ch.meta(l))
	}
	for _, g := range ch.remote {
		for _, m := range g.members {
			ms = append(ms, m.meta())
		}
	}
	b := append(t.appendGroups(make([]byte, 0, ch.bytes+3), ms), ']')
	t.scratch = keepScratch(ms)
	return b
}

// localState is this gateway's part, for the bus: {key: {metas}} (t.mu
// held).
func (t *Tracker) localState(dst []byte, ch *chanState) []byte {
	ms := t.scratch[:0]
	for l := range ch.local.all() {
		ms = append(ms, ch.meta(l))
	}
	dst = t.appendGroups(dst, ms)
	t.scratch = keepScratch(ms)
	return dst
}

// keepBuf keeps b as the scratch buffer, unless a storm grew it.
func (t *Tracker) keepBuf(b []byte) {
	if cap(b) > 64<<10 {
		b = nil
	}
	t.buf = b[:0]
}

// keepScratch clears ms for reuse, letting go of a backing array grown
// for a big channel.
func keepScratch(ms []meta) []meta {
	clear(ms)
	if cap(ms) > 1024 {
		return nil
	}
	return ms[:0]
}

type target struct {
	conn transport.Conn
	msg  *transport.Message
}

// flush sends the batched diffs: one presence_diff per dirty channel to its
// local members that have their state (encoded once per protocol version),
// presence_state to members that joined since and one diff message to the
// bus. Only the loop calls it (and Close, after the loop ended), so a
// member's state and diffs leave in order.
//
// A join wave costs one encoding of the state, not one per joiner: the
// state is encoded once per change of the channel and shared by
// reference (a v2 joiner's message is its own head — only the join_ref
// differs — plus the shared state as transport.Message.Tail; v1 messages
// carry no join_ref and are shared whole). Over the caps (Config.
// MaxMembers), joiners get an empty state and the count instead, so what
// a wave costs does not grow with the room.
//
// It reports whether anything was dirty.
func (t *Tracker) flush() bool {
	type pub struct {
		topic string
		msg   []byte
	}
	targets := t.flushing[:0]
	var pubs []pub
	now := t.cfg.now()
	t.mu.Lock()
	busy := len(t.dirty) > 0
	t.diffFrames = 0
	for _, ch := range t.dirty {
		ch.dirty = false
		ch.pend()
		targets = t.flushChannel(ch, now, targets)
		if !ch.bus.empty() {
			ch.seq++
			pubs = append(pubs, pub{ch.topic, t.encodeDiff(ch.seq, ch.opts.Value().TTL, ch.bus)})
			ch.bus.reset()
		}
		ch.unpend()
	}
	clear(t.dirty)
	t.dirty = t.dirty[:0]
	t.sendMu.Lock() // taken before t.mu goes: Untrack waits for these sends
	t.mu.Unlock()
	for _, tg := range targets {
		tg.conn.Send(tg.msg)
	}
	t.sendMu.Unlock()
	// Kept for the next flush (one diff to a big room is a target per
	// member), without pinning the messages just sent.
	clear(targets)
	t.flushing = targets[:0]
	for _, p := range pubs {
		if err := t.cfg.Bus.PresencePublish(p.topic, p.msg); err != nil {
			t.cfg.Logger.Debug("presence: publish failed", "topic", p.topic, "err", err)
		}
	}
	return busy
}

// flushChannel appends what ch's local members are to be sent (t.mu held).
func (t *Tracker) flushChannel(ch *chanState, now time.Time, targets []target) []target {
	if over := t.over(ch); over != ch.capped {
		// Crossing a cap either way: every member gets a new state (the
		// empty one over the cap, the full one back under it) and no diff
		// of what it already reflects.
		ch.capped = over
		ch.out.reset()
		ch.counted = [2]int{-1, -1}
		ch.countDirty = over
		for l := range ch.local.all() {
			if !l.needState {
				l.needState = true
				ch.fresh = append(ch.fresh, l)
			}
		}
	}
	if !ch.out.empty() {
		t.buf = t.appendDiff(t.buf[:0], ch.out)
		ch.out.reset()
		var enc [3]*transport.Message
		for l := range ch.local.all() {
			if l.needState {
				continue // its state will reflect the diff
			}
			if enc[l.v] == nil {
				enc[l.v] = transport.NewText(phoenix.AppendMessage(nil, l.v, phoenix.Null, phoenix.Null, ch.topic, EventDiff, t.buf))
			}
			targets = append(targets, target{l.conn, enc[l.v]})
			t.diffFrames++
		}
		t.keepBuf(t.buf)
	}
	if ch.syncing {
		return targets // the states wait for the other gateways' (start)
	}
	var count [3]*transport.Message
	keys := -1 // distinct keys, looked up once per flush when needed
	countMsg := func(v phoenix.Version) *transport.Message {
		if count[v] == nil {
			if keys < 0 {
				keys = t.keysFor(ch)
			}
			p := []byte(`{"count":`)
			p = strconv.AppendInt(p, int64(keys), 10)
			p = append(p, `,"metas":`...)
			p = strconv.AppendInt(p, int64(ch.metas), 10)
			count[v] = transport.NewText(phoenix.AppendMessage(nil, v, phoenix.Null, phoenix.Null, ch.topic, EventCount, append(p, '}')))
		}
		return count[v]
	}
	if len(ch.fresh) > 0 {
		// One state for the whole wave, shared: a v2 joiner's message is
		// its own head (its join_ref) and the state as the Tail; v1
		// messages carry no join_ref and are shared whole.
		var v1, tail *transport.Message
		var st []byte
		for _, l := range ch.fresh {
			if l.gone {
				continue
			}
			l.needState = false
			var m *transport.Message
			switch {
			case ch.capped:
				// Over the caps the state is {}: one small frame of its
				// own beats a head and a shared tail (two frames).
				m = transport.NewText(phoenix.AppendMessage(nil, l.v, l.joinRefOf(), phoenix.Null, ch.topic, EventState, []byte("{}")))
			case l.v == phoenix.V1:
				if st == nil {
					st = t.state(ch)
				}
				if v1 == nil {
					v1 = transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, phoenix.Null, ch.topic, EventState, st[:len(st)-1]))
				}
				m = v1
			default:
				if st == nil {
					st = t.state(ch)
				}
				if tail == nil {
					tail = transport.NewText(st)
				}
				m = &transport.Message{Data: phoenix.AppendHead(nil, l.joinRefOf(), phoenix.Null, ch.topic, EventState), Tail: tail}
			}
			targets = append(targets, target{l.conn, m})
			if ch.capped {
				targets = append(targets, target{l.conn, countMsg(l.v)})
			}
		}
		clear(ch.fresh)
		ch.fresh = ch.fresh[:0]
		if cap(ch.fresh) > 1024 || cap(ch.fresh) <= 1 {
			ch.fresh = nil // do not keep a storm's backlog, nor a lone joiner's slot
		}
	}
	// Counts to everyone when they changed, at most every CountInterval
	// (housekeep flushes the channel again when one is due).
	if ch.capped && ch.countDirty && t.clock(now)-ch.countAt >= t.cfg.CountInterval {
		ch.countDirty = false
		keys = t.keysFor(ch)
		if c := [2]int{keys, ch.metas}; c != ch.counted {
			if ch.counted[0] >= 0 {
				for l := range ch.local.all() {
					targets = append(targets, target{l.conn, countMsg(l.v)})
				}
			}
			ch.counted = c
		}
		ch.countAt = t.clock(now)
	}
	return targets
}

// keysFor is the channel's number of distinct keys, counted again only
// when members changed since the last count: once per flush that has
// joiners (they get the exact count with their state) and once per
// CountInterval for everyone, while the channel is capped (t.mu held).
func (t *Tracker) keysFor(ch *chanState) int {
	if !ch.keysFresh {
		ch.keysN, ch.keysFresh = t.distinctKeys(ch), true
	}
	return ch.keysN
}

// distinctKeys counts the channel's presence keys (what Presence.list()
// would hold) with an open-addressing set of key hashes in a scratch table
// reused from flush to flush, rather than a map kept per member: O(members)
// each time, no allocation once the table has grown (t.mu held).
func (t *Tracker) distinctKeys(ch *chanState) int {
	n := ch.local.len()
	for _, g := range ch.remote {
		n += len(g.members)
	}
	size := 16
	for size < 2*n {
		size <<= 1
	}
	if cap(t.hashes) < size {
		t.hashes = make([]uint64, size)
	}
	set := t.hashes[:size]
	clear(set)
	mask := uint64(size - 1)
	keys := 0
	add := func(key string) {
		h := maphash.String(t.keySeed, key) | 1 // 0 marks an empty slot
		for i := h & mask; ; i = (i + 1) & mask {
			switch set[i] {
			case 0:
				set[i] = h
				keys++
				return
			case h:
				return
			}
		}
	}
	for l := range ch.local.all() {
		add(l.key)
	}
	for _, g := range ch.remote {
		for _, m := range g.members {
			add(m.key)
		}
	}
	return keys
}

// appendGroups encodes {key: {"metas": [...]}, ...}, sorting ms by key
// (stable: a key's metas keep their order).
func (t *Tracker) appendGroups(dst []byte, ms []meta) []byte {
	slices.SortStableFunc(ms, func(a, b meta) int { return strings.Compare(a.key, b.key) })
	dst = append(dst, '{')
	for i := range ms {
		switch {
		case i == 0:
		case ms[i].key == ms[i-1].key:
			dst = append(dst, ',')
			dst = t.appendMeta(dst, &ms[i])
			continue
		default:
			dst = append(dst, "]},"...)
		}
		dst = appendString(dst, ms[i].key)
		dst = append(dst, `:{"metas":[`...)
		dst = t.appendMeta(dst, &ms[i])
	}
	if len(ms) > 0 {
		dst = append(dst, "]}"...)
	}
	return append(dst, '}')
}

// appendDiff encodes {"joins": …, "leaves": …} (sorting d's lists).
func (t *Tracker) appendDiff(dst []byte, d diff) []byte {
	dst = append(dst, `{"joins":`...)
	dst = t.appendGroups(dst, d.joins)
	dst = append(dst, `,"leaves":`...)
	dst = t.appendGroups(dst, d.leaves)
	return append(dst, '}')
}
