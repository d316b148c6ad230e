package session

import (
	"strconv"
	"sync/atomic"

	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
)

// channel is one join instance. Its pointer is the hub membership key, so
// a duplicate join's new instance never shares a delivery path with the
// old. One exists per joined channel of every connection, so it is kept
// to 48 bytes: the join_ref as a number when it is what phoenix.js sends
// (the decimal string of a counter), which also frees the decoded frame's
// strings, and what most joins do not have (join params, a join hook's
// answer, refs of another shape) in a side record.
type channel struct {
	s     *Session
	topic string    // the hub's copy when the topic is live here (Hub.Intern)
	more  *chanMore // nil for most joins; set before the instance is shared
	slot  hub.Slot  // the hub's (hub.Slotted)
	jref  uint32    // join_ref n+1 when it is the decimal string of n; 0: see more
	state atomic.Uint32
	// refSame: the join message's ref is its join_ref (phoenix.js sends
	// both alike, and a join without a join_ref takes its ref).
	refSame bool
	live    bool // under Session.mu: announced (join event, presence), see announce
}

// chanMore is the part of a join instance most joins lack.
type chanMore struct {
	joinRef phoenix.Ref // when channel.jref is 0
	ref     phoenix.Ref // the join message's ref, unless refSame
	params  string      // join params, forwarded with routed pushes ("" for none)
	hook    *chanHook   // the join hook's answer (set under Session.mu); nil when not asked
}

// channel.state bits.
const (
	stJoined  uint32 = 1 << iota // the ok reply went out and the hub delivers to it
	stGone                       // left, replaced or disconnected: no reply any more
	stCounted                    // the join's result was counted (joinDone)
)

// maxRefDigits keeps a compact join_ref within a uint32 (with its +1).
const maxRefDigits = 9

// newChannel is the instance of a join of topic. hooked: a join hook may
// add its answer later, so the side record exists from the start (its
// pointer never changes once the instance is shared).
func newChannel(s *Session, topic string, joinRef, ref phoenix.Ref, params string, hooked bool) *channel {
	ch := &channel{s: s, topic: topic, refSame: ref == joinRef}
	var m chanMore
	if n, ok := smallRef(joinRef); ok {
		ch.jref = n + 1
	} else {
		m.joinRef = joinRef
	}
	if !ch.refSame {
		m.ref = ref
	}
	m.params = params
	// Not m != chanMore{}: a null ref is the zero Ref.
	if hooked || ch.jref == 0 || !ch.refSame || params != "" {
		ch.more = &m
	}
	return ch
}

// smallRef reads a ref that is the decimal string of a small number, as
// written by strconv (no sign, no leading zero): that string can be
// rebuilt from the number.
func smallRef(r phoenix.Ref) (uint32, bool) {
	if !r.Valid || r.Raw || len(r.S) == 0 || len(r.S) > maxRefDigits || (len(r.S) > 1 && r.S[0] == '0') {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(r.S); i++ {
		c := r.S[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint32(c-'0')
	}
	return n, true
}

// joinRef is the instance's join_ref.
func (ch *channel) joinRef() phoenix.Ref {
	if ch.jref != 0 {
		return phoenix.R(strconv.FormatUint(uint64(ch.jref-1), 10))
	}
	return ch.more.joinRef
}

// isJoinRef reports whether r is the instance's join_ref, without
// building it (pushes ask).
func (ch *channel) isJoinRef(r phoenix.Ref) bool {
	if ch.jref != 0 {
		n, ok := smallRef(r)
		return ok && n+1 == ch.jref
	}
	return r == ch.more.joinRef
}

// joinMsgRef is the ref of the join message, for its reply.
func (ch *channel) joinMsgRef() phoenix.Ref {
	if ch.refSame {
		return ch.joinRef()
	}
	return ch.more.ref
}

// paramsJSON is the join params as bytes, nil when empty.
func (ch *channel) paramsJSON() []byte {
	if ch.more == nil || ch.more.params == "" {
		return nil
	}
	return []byte(ch.more.params)
}

// hookAnswer is the join hook's answer, nil when none.
func (ch *channel) hookAnswer() *chanHook {
	if ch.more == nil {
		return nil
	}
	return ch.more.hook
}

func (ch *channel) joined() bool { return ch.state.Load()&stJoined != 0 }
func (ch *channel) gone() bool   { return ch.state.Load()&stGone != 0 }
func (ch *channel) setJoined()   { ch.state.Or(stJoined) }
func (ch *channel) setGone()     { ch.state.Or(stGone) }

// count marks the join's result counted; it reports whether this call
// was the first.
func (ch *channel) count() bool { return ch.state.Or(stCounted)&stCounted == 0 }

// MemberSlot implements hub.Slotted: the hub finds the instance among a
// channel's members without a map of its own.
func (ch *channel) MemberSlot() *hub.Slot { return &ch.slot }
