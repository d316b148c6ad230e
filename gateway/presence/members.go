package presence

import (
	"hash/maphash"
	"iter"
	"strconv"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// A channel's local members: one small record each, found by channel
// instance (docs/presence.md, "How members are stored").

// Instance is a channel instance that can give its connection and
// join_ref when the tracker needs them (a flush sending it a state or a
// diff). Tracking such an instance keeps no copy of either: the record
// holds the instance, 16 bytes, instead of the connection and the join_ref,
// 33. A session's channel instance is one (gateway/session). The answers
// must not change during the instance's life, and the methods must neither
// block nor lock: they are called under the Tracker's lock.
//
// PresenceConnID is the connection's id as a shared prefix and a number
// (the id is prefix + n in base 36; n 0: no such id). When a member's key
// is its connection's id (anonymous, no key param), the record keeps the
// shared prefix and asks for the number when it writes the key, rather
// than keeping a string per member.
type Instance interface {
	PresenceConn() transport.Conn
	PresenceJoinRef() phoenix.Ref
	PresenceConnID() (prefix string, n uint64)
}

// held is what Track keeps for an instance that is not an Instance: the
// connection and join_ref its Member gave.
type held struct {
	inst    any
	conn    transport.Conn
	joinRef phoenix.Ref
}

func (h *held) PresenceConn() transport.Conn     { return h.conn }
func (h *held) PresenceJoinRef() phoenix.Ref     { return h.joinRef }
func (h *held) PresenceConnID() (string, uint64) { return "", 0 }

// local is a member of this gateway: 64 bytes (TestStateSizes), plus its
// slot in chanState.local. Its key is the session's string, shared, or
// the connection id's shared prefix (connKey: the number is the
// instance's); its meta is written out only when a state or diff is
// encoded (metas.go).
type local struct {
	src       Instance // the channel instance, or a *held for one that is not an Instance
	key       string
	app       appMeta
	ref       uint64 // phx_ref counter (phx_ref_prev, rare: chanState.prevs)
	online    int64  // online_at, unix ms
	hash      uint32 // of the instance, for chanState.local's table
	v         phoenix.Version
	needState bool // presence_state not sent yet: gets no diff before it
	gone      bool // untracked while waiting in chanState.fresh
	connKey   bool // the key is key + the connection's number (Instance.PresenceConnID)
}

// setKey sets l's key, keeping a key that is the instance's connection id
// as its shared prefix (the written key is the same).
func (l *local) setKey(key string) {
	l.key = key
	prefix, n := l.src.PresenceConnID()
	if n == 0 || len(key) <= len(prefix) || key[:len(prefix)] != prefix {
		return
	}
	var num [16]byte
	if key[len(prefix):] == string(strconv.AppendUint(num[:0], n, 36)) {
		l.key, l.connKey = prefix, true
	}
}

// id is the number written after l.key (0: none).
func (l *local) id() uint64 {
	if !l.connKey {
		return 0
	}
	_, n := l.src.PresenceConnID()
	return n
}

func newLocal(inst any, m Member) *local {
	l := &local{v: m.Version, needState: true, hash: uint32(maphash.Comparable(instSeed, inst))}
	if src, ok := inst.(Instance); ok {
		l.src = src
	} else {
		l.src = &held{inst: inst, conn: m.Conn, joinRef: m.JoinRef}
	}
	return l
}

func (l *local) conn() transport.Conn { return l.src.PresenceConn() }
func (l *local) joinRef() phoenix.Ref { return l.src.PresenceJoinRef() }
func (l *local) is(inst any) bool     { return l.inst() == inst }
func (l *local) inst() any {
	if h, ok := l.src.(*held); ok {
		return h.inst
	}
	return l.src
}

// instSeed hashes instances for the members' tables (any seed will do:
// a table lives in one process).
var instSeed = maphash.MakeSeed()

// members is a channel's local members by channel instance. A channel of
// one member (one channel per user) keeps it inline. From the second on,
// members are in an open-addressing table of record pointers (linear
// probing, at most 3/4 full, hashed by instance): 8 bytes a slot, where a
// map[any]*local spends 24 a slot and its control bytes, about 50 bytes a
// member at the sizes measured.
type members struct {
	one *local
	tab *memberTable
}

type memberTable struct {
	slots []*local // a power of two long
	n     int
}

func (m *members) get(inst any) *local {
	if m.tab != nil {
		return m.tab.get(inst, uint32(maphash.Comparable(instSeed, inst)))
	}
	if m.one != nil && m.one.is(inst) {
		return m.one
	}
	return nil
}

// put adds l, whose instance is not there yet.
func (m *members) put(l *local) {
	switch {
	case m.tab != nil:
		m.tab.put(l)
	case m.one == nil:
		m.one = l
	default:
		m.tab = &memberTable{slots: make([]*local, 8)}
		m.tab.put(m.one)
		m.tab.put(l)
		m.one = nil
	}
}

func (m *members) del(inst any) {
	switch {
	case m.tab != nil:
		m.tab.del(inst, uint32(maphash.Comparable(instSeed, inst)))
		switch m.tab.n {
		case 0:
			m.tab = nil
		case 1:
			for _, l := range m.tab.slots {
				if l != nil {
					m.one, m.tab = l, nil // inline again
					break
				}
			}
		}
	case m.one != nil && m.one.is(inst):
		m.one = nil
	}
}

func (m *members) len() int {
	switch {
	case m.tab != nil:
		return m.tab.n
	case m.one != nil:
		return 1
	}
	return 0
}

// all yields every member (in no particular order). The members must not
// change while it runs.
func (m *members) all() iter.Seq[*local] {
	return func(yield func(*local) bool) {
		if m.tab == nil {
			if m.one != nil {
				yield(m.one)
			}
			return
		}
		for _, l := range m.tab.slots {
			if l != nil && !yield(l) {
				return
			}
		}
	}
}

func (t *memberTable) mask() uint32 { return uint32(len(t.slots) - 1) }

func (t *memberTable) get(inst any, h uint32) *local {
	for i := h & t.mask(); t.slots[i] != nil; i = (i + 1) & t.mask() {
		if l := t.slots[i]; l.hash == h && l.is(inst) {
			return l
		}
	}
	return nil
}

func (t *memberTable) put(l *local) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(len(t.slots) * 2)
	}
	t.insert(l)
	t.n++
}

func (t *memberTable) insert(l *local) {
	i := l.hash & t.mask()
	for t.slots[i] != nil {
		i = (i + 1) & t.mask()
	}
	t.slots[i] = l
}

// del removes inst's record, shifting the records after it back so that
// no lookup needs tombstones; a table left under 1/8 full shrinks (a leave
// storm gives its memory back).
func (t *memberTable) del(inst any, h uint32) {
	mask := t.mask()
	i := h & mask
	for {
		l := t.slots[i]
		if l == nil {
			return // not there
		}
		if l.hash == h && l.is(inst) {
			break
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		// The record at j may fill the hole at i unless its home slot k
		// lies cyclically in (i, j]: a lookup from k would not pass i.
		k := t.slots[j].hash & mask
		if (i < j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		t.slots[i], i = t.slots[j], j
	}
	t.slots[i] = nil
	t.n--
	if len(t.slots) > 8 && t.n*8 < len(t.slots) {
		t.resize(max(8, len(t.slots)/4))
	}
}

func (t *memberTable) resize(size int) {
	old := t.slots
	t.slots = make([]*local, size)
	for _, l := range old {
		if l != nil {
			t.insert(l)
		}
	}
}
