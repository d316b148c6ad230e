package presence

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Towards local clients: the channel's presence_state, batched
// presence_diff and, over the caps, the counts, encoded once and shared.

// diff accumulates joins and leaves by key, in the Phoenix shape.
type diff struct {
	joins, leaves map[string][]json.RawMessage
}

func (d *diff) add(joins bool, m meta) {
	p := &d.leaves
	if joins {
		p = &d.joins
	}
	if *p == nil {
		*p = make(map[string][]json.RawMessage)
	}
	(*p)[m.key] = append((*p)[m.key], m.raw)
}

func (d *diff) empty() bool { return len(d.joins) == 0 && len(d.leaves) == 0 }

// state is the channel's full presence in the Phoenix shape followed by
// "]" (the end of a v2 message: see flush), built once per change
// (t.mu held).
func (ch *chanState) state() []byte {
	if ch.cache != nil {
		return ch.cache
	}
	groups := make(map[string][]json.RawMessage, len(ch.local))
	for _, l := range ch.local {
		groups[l.key] = append(groups[l.key], l.raw)
	}
	for _, g := range ch.remote {
		for _, m := range g.members {
			groups[m.key] = append(groups[m.key], m.raw)
		}
	}
	ch.cache = append(appendGroups(make([]byte, 0, ch.bytes+3), groups), ']')
	return ch.cache
}

// localState is this gateway's part, for the bus (t.mu held).
func (ch *chanState) localState() map[string][]json.RawMessage {
	groups := make(map[string][]json.RawMessage, len(ch.local))
	for _, l := range ch.local {
		groups[l.key] = append(groups[l.key], l.raw)
	}
	return groups
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
func (t *Tracker) flush() {
	type pub struct {
		topic string
		msg   []byte
	}
	var targets []target
	var pubs []pub
	now := t.cfg.now()
	t.mu.Lock()
	for _, ch := range t.dirty {
		ch.dirty = false
		t.flushChannel(ch, now, &targets)
		if !ch.bus.empty() {
			ch.seq++
			pubs = append(pubs, pub{ch.topic, t.encode(&wire{T: kindDiff, Seq: ch.seq, TTL: ch.opts.TTL.Milliseconds(),
				Joins: groupsOf(ch.bus.joins), Leaves: groupsOf(ch.bus.leaves)})})
			ch.bus = diff{}
		}
	}
	t.dirty = t.dirty[:0]
	t.sendMu.Lock() // taken before t.mu goes: Untrack waits for these sends
	t.mu.Unlock()
	for _, tg := range targets {
		tg.conn.Send(tg.msg)
	}
	t.sendMu.Unlock()
	for _, p := range pubs {
		if err := t.cfg.Bus.PresencePublish(p.topic, p.msg); err != nil {
			t.cfg.Logger.Debug("presence: publish failed", "topic", p.topic, "err", err)
		}
	}
}

// flushChannel appends what ch's local members are to be sent (t.mu held).
func (t *Tracker) flushChannel(ch *chanState, now time.Time, targets *[]target) {
	if over := t.over(ch); over != ch.capped {
		// Crossing a cap either way: every member gets a new state (the
		// empty one over the cap, the full one back under it) and no diff
		// of what it already reflects.
		ch.capped = over
		ch.out = diff{}
		ch.counted = [2]int{-1, -1}
		ch.keys = nil // kept only while capped: small channels pay no map
		if over {
			ch.keys = map[string]int{}
			for _, l := range ch.local {
				ch.keys[l.key]++
			}
			for _, g := range ch.remote {
				for _, m := range g.members {
					ch.keys[m.key]++
				}
			}
		}
		for _, l := range ch.local {
			if !l.needState {
				l.needState = true
				ch.fresh = append(ch.fresh, l)
			}
		}
	}
	if !ch.out.empty() {
		payload := appendDiff(nil, ch.out)
		ch.out = diff{}
		var enc [3]*transport.Message
		for _, l := range ch.local {
			if l.needState {
				continue // its state will reflect the diff
			}
			if enc[l.v] == nil {
				enc[l.v] = transport.NewText(phoenix.AppendMessage(nil, l.v, phoenix.Null, phoenix.Null, ch.topic, EventDiff, payload))
			}
			*targets = append(*targets, target{l.conn, enc[l.v]})
		}
	}
	if ch.syncing {
		return // the states wait for the other gateways' (start)
	}
	var count [3]*transport.Message
	countMsg := func(v phoenix.Version) *transport.Message {
		if count[v] == nil {
			p := []byte(`{"count":`)
			p = strconv.AppendInt(p, int64(len(ch.keys)), 10)
			p = append(p, `,"metas":`...)
			p = strconv.AppendInt(p, int64(ch.metas), 10)
			count[v] = transport.NewText(phoenix.AppendMessage(nil, v, phoenix.Null, phoenix.Null, ch.topic, EventCount, append(p, '}')))
		}
		return count[v]
	}
	if len(ch.fresh) > 0 {
		var v1 *transport.Message
		for _, l := range ch.fresh {
			if l.gone {
				continue
			}
			l.needState = false
			var m *transport.Message
			switch {
			case ch.capped:
				m = transport.NewText(phoenix.AppendMessage(nil, l.v, l.joinRef, phoenix.Null, ch.topic, EventState, []byte("{}")))
			case l.v == phoenix.V1:
				if v1 == nil {
					st := ch.state()
					v1 = transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, phoenix.Null, ch.topic, EventState, st[:len(st)-1]))
				}
				m = v1
			default:
				if ch.tail == nil {
					ch.tail = transport.NewText(ch.state())
				}
				m = &transport.Message{Data: phoenix.AppendHead(nil, l.joinRef, phoenix.Null, ch.topic, EventState), Tail: ch.tail}
			}
			*targets = append(*targets, target{l.conn, m})
			if ch.capped {
				*targets = append(*targets, target{l.conn, countMsg(l.v)})
			}
		}
		clear(ch.fresh)
		ch.fresh = ch.fresh[:0]
		if cap(ch.fresh) > 1024 {
			ch.fresh = nil // do not keep a storm's backlog
		}
	}
	// Counts to everyone when they changed, at most every CountInterval
	// (housekeep flushes the channel again when one is due).
	if ch.capped && ch.counted != [2]int{len(ch.keys), ch.metas} && now.Sub(ch.countAt) >= t.cfg.CountInterval {
		if ch.counted[0] >= 0 {
			for _, l := range ch.local {
				*targets = append(*targets, target{l.conn, countMsg(l.v)})
			}
		}
		ch.counted, ch.countAt = [2]int{len(ch.keys), ch.metas}, now
	}
}

// appendGroups encodes {key: {"metas": [...]}, ...}.
func appendGroups(dst []byte, groups map[string][]json.RawMessage) []byte {
	dst = append(dst, '{')
	first := true
	for key, metas := range groups {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, encodeJSON(key)...)
		dst = append(dst, `:{"metas":[`...)
		for i, m := range metas {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, m...)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, '}')
}

// appendDiff encodes {"joins": …, "leaves": …}.
func appendDiff(dst []byte, d diff) []byte {
	dst = append(dst, `{"joins":`...)
	dst = appendGroups(dst, d.joins)
	dst = append(dst, `,"leaves":`...)
	dst = appendGroups(dst, d.leaves)
	return append(dst, '}')
}
