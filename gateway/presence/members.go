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

// setConnKey keys l by its connection, the key of last resort, from the
// instance's prefix and number: no id string is built to be taken apart.
func (l *local) setConnKey() {
	prefix, n := l.src.PresenceConnID()
	if n == 0 {
		return // no connection number: the empty key, as an empty ConnID
	}
	l.key, l.connKey = prefix, true
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
	l := &local{v: m.Version, needState: true, hash: instHash(inst)}
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
// members are in a table of record pointers hashed by instance: 8 bytes
// a slot, where a map[any]*local spends 24 a slot and its control bytes,
// about 50 bytes a member at the sizes measured.
type members struct {
	one *local
	tab *table[*local]
}

func (l *local) home() uint32 { return l.hash }

func instHash(inst any) uint32 { return uint32(maphash.Comparable(instSeed, inst)) }

func (m *members) get(inst any) *local {
	if m.tab != nil {
		return m.tab.get(instHash(inst), func(l *local) bool { return l.is(inst) })
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
		m.tab = &table[*local]{}
		m.tab.put(m.one)
		m.tab.put(l)
		m.one = nil
	}
}

func (m *members) del(inst any) {
	switch {
	case m.tab != nil:
		m.tab.del(instHash(inst), func(l *local) bool { return l.is(inst) })
		switch m.tab.n {
		case 0:
			m.tab = nil
		case 1:
			for l := range m.tab.all() {
				m.one = l // inline again
			}
			m.tab = nil
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
	if m.tab != nil {
		return m.tab.all()
	}
	return func(yield func(*local) bool) {
		if m.one != nil {
			yield(m.one)
		}
	}
}
