package presence

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// A channel's only member is kept without a table; the second makes one,
// the last but one leaving goes back inline, and members come and go
// through both shapes.
func TestMembersInlineThenTable(t *testing.T) {
	var m members
	ia, ib := new(int), new(int)
	a, b := newLocal(ia, Member{}), newLocal(ib, Member{})
	m.put(a)
	if m.tab != nil || m.get(ia) != a || m.get(ib) != nil || m.len() != 1 {
		t.Fatal("one member")
	}
	m.put(b)
	if m.tab == nil || m.get(ia) != a || m.get(ib) != b || m.len() != 2 {
		t.Fatal("two members")
	}
	seen := 0
	for range m.all() {
		seen++
	}
	m.del(ia)
	m.del(ia)
	if seen != 2 || m.get(ia) != nil || m.get(ib) != b || m.len() != 1 || m.tab != nil {
		t.Fatalf("after a leave: seen %d, len %d, table %v", seen, m.len(), m.tab != nil)
	}
	m.del(ib)
	if m.len() != 0 || m.one != nil {
		t.Fatal("empty")
	}
	m.put(a)
	m.del(ib) // not there: nothing happens
	if m.get(ia) != a || m.len() != 1 {
		t.Fatal("inline again")
	}
}

// The table agrees with a map through random joins and leaves (instances
// of several kinds, as Track gets them: pointers, numbers, Instances), a
// join storm and a leave storm, and shrinks once emptied out.
func TestMembersTableAgreesWithAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var m members
	ref := map[any]*local{}
	insts := make([]any, 0, 3000)
	for i := range 3000 {
		switch i % 3 {
		case 0:
			insts = append(insts, new(int))
		case 1:
			insts = append(insts, i)
		default:
			insts = append(insts, &fakeInstance{})
		}
	}
	check := func(step string) {
		t.Helper()
		if m.len() != len(ref) {
			t.Fatalf("%s: len %d, want %d", step, m.len(), len(ref))
		}
		n := 0
		for l := range m.all() {
			if ref[l.inst()] != l {
				t.Fatalf("%s: listed a member that is not there", step)
			}
			n++
		}
		if n != len(ref) {
			t.Fatalf("%s: listed %d, want %d", step, n, len(ref))
		}
		for _, in := range insts {
			if m.get(in) != ref[in] {
				t.Fatalf("%s: get disagrees", step)
			}
		}
	}
	for i := range 20000 { // bounded: random joins and leaves
		in := insts[rng.IntN(200)]
		if ref[in] == nil {
			l := newLocal(in, Member{})
			m.put(l)
			ref[in] = l
		} else {
			m.del(in)
			delete(ref, in)
		}
		if i%1000 == 0 {
			check("random")
		}
	}
	check("random")
	for _, in := range insts { // join storm
		if ref[in] == nil {
			l := newLocal(in, Member{})
			m.put(l)
			ref[in] = l
		}
	}
	check("storm")
	for i, in := range insts { // leave storm, all but one
		if i == len(insts)-1 {
			break
		}
		m.del(in)
		delete(ref, in)
	}
	check("after the leaves")
	if m.tab != nil || m.one == nil {
		t.Fatal("a lone member is not kept inline again")
	}
}

// A member whose instance is an Instance is asked for its connection and
// join_ref; any other instance has them kept from Member.
func TestMemberRecordAsksTheInstance(t *testing.T) {
	fi := &fakeInstance{conn: &nullConn{}, ref: phoenix.R("7")}
	l := newLocal(fi, Member{})
	if l.conn() != fi.conn || l.joinRef() != fi.ref || !l.is(fi) {
		t.Fatal("not the instance's")
	}
	c := &nullConn{}
	l = newLocal(3, Member{Conn: c, JoinRef: phoenix.R("8")})
	if l.conn() != c || l.joinRef() != phoenix.R("8") || !l.is(3) || l.is(4) {
		t.Fatal("not the Member's")
	}
}

type fakeInstance struct {
	conn transport.Conn
	ref  phoenix.Ref
}

func (f *fakeInstance) PresenceConn() transport.Conn     { return f.conn }
func (f *fakeInstance) PresenceJoinRef() phoenix.Ref     { return f.ref }
func (f *fakeInstance) PresenceConnID() (string, uint64) { return "", 0 }

// connInst is a channel instance as the session's: an Instance whose
// connection id is prefix + n in base 36.
type connInst struct {
	*client
	prefix string
	n      uint64
}

func (c *connInst) PresenceConn() transport.Conn     { return c.conn }
func (c *connInst) PresenceJoinRef() phoenix.Ref     { return phoenix.R("1") }
func (c *connInst) PresenceConnID() (string, uint64) { return c.prefix, c.n }

// A key that is the connection's id is kept as the shared prefix and
// written from the connection's number; it sorts, groups, counts and
// lists exactly as the string would, also next to a key param that
// spells another connection's id.
func TestConnIDKeysAreWrittenAsTheirString(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	const prefix = "gwA-"
	var insts []*connInst
	for _, id := range []uint64{1, 10, 2, 36, 35} {
		in := &connInst{client: newClient(), prefix: prefix, n: id}
		insts = append(insts, in)
		tr.Track("room:k", in, Member{Conn: in.conn, Version: phoenix.V2, JoinRef: phoenix.R("1"),
			ConnID: prefix + strconv.FormatUint(id, 36)})
	}
	// One whose key param is connection 10's id: one key, two metas. And
	// one whose Member.ConnID is not its instance's: kept as given.
	same := &connInst{client: newClient(), prefix: prefix, n: 99}
	tr.Track("room:k", same, Member{Conn: same.conn, Version: phoenix.V2, JoinRef: phoenix.R("1"),
		ConnID: prefix + "2r", Params: []byte(`{"presence_key":"gwA-a"}`)})
	odd := &connInst{client: newClient(), prefix: prefix, n: 7}
	tr.Track("room:k", odd, Member{Conn: odd.conn, Version: phoenix.V2, JoinRef: phoenix.R("1"), ConnID: "other-7"})
	waitSynced(t, tr, "room:k")
	tr.flush()

	tr.mu.Lock()
	ch := tr.channel("room:k")
	for _, in := range insts {
		if l := ch.local.get(in); !l.connKey || l.key != prefix {
			tr.mu.Unlock()
			t.Fatalf("connection %d's key kept as %q (connKey %v)", in.n, l.key, l.connKey)
		}
	}
	if l := ch.local.get(odd); l.connKey || l.key != "other-7" {
		tr.mu.Unlock()
		t.Fatalf("a key that is not the instance's id: %q", l.key)
	}
	keys := tr.distinctKeys(ch)
	tr.mu.Unlock()
	if keys != 6 {
		t.Fatalf("%d distinct keys, want 6", keys)
	}

	// The state as sent: keys in order, each once.
	msgs := odd.conn.Sent()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	var f []json.RawMessage
	if err := json.Unmarshal(msgs[0].Bytes(), &f); err != nil || len(f) != 5 {
		t.Fatalf("state %s: %v", msgs[0].Bytes(), err)
	}
	dec := json.NewDecoder(bytes.NewReader(f[4]))
	dec.Token() // {
	var got []string
	metas := map[string]int{}
	for dec.More() {
		tok, _ := dec.Token()
		key := tok.(string)
		var g struct{ Metas []json.RawMessage }
		if err := dec.Decode(&g); err != nil {
			t.Fatal(err)
		}
		got = append(got, key)
		metas[key] = len(g.Metas)
	}
	if want := "gwA-1 gwA-10 gwA-2 gwA-a gwA-z other-7"; strings.Join(got, " ") != want {
		t.Fatalf("keys %q, want %q", strings.Join(got, " "), want)
	}
	if metas["gwA-a"] != 2 {
		t.Fatalf("gwA-a has %d metas, want 2", metas["gwA-a"])
	}
	if l, _ := tr.Local("room:k"); len(l["gwA-a"]) != 2 || len(l["gwA-z"]) != 1 || len(l) != 6 {
		t.Fatalf("Local: %v", l)
	}

	// A leave is written with the key as sent.
	tr.Untrack("room:k", insts[4])
	tr.flush()
	odd.client.read(t)
	if _, ok := odd.client.view["gwA-z"]; ok || len(odd.client.view) != 5 {
		t.Fatalf("after gwA-z left: %s", odd.client.keys())
	}
}

// The tracker's channels are in a table by topic: each is found, and
// idle ones are dropped after the grace, the table with them.
func TestChannelTable(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	const chans = 300
	for i := range chans {
		tr.Track("room:t"+strconv.Itoa(i), i, Member{Conn: &nullConn{}, Version: phoenix.V2, ConnID: "c" + strconv.Itoa(i)})
	}
	settle(tr)
	tr.flush()
	tr.mu.Lock()
	for i := range chans {
		if ch := tr.channel("room:t" + strconv.Itoa(i)); ch == nil || ch.local.get(i) == nil {
			tr.mu.Unlock()
			t.Fatalf("room:t%d not found", i)
		}
	}
	if tr.chans.n != chans || tr.channel("room:none") != nil {
		tr.mu.Unlock()
		t.Fatalf("%d channels", tr.chans.n)
	}
	tr.mu.Unlock()
	for i := range chans {
		if i%2 == 0 {
			tr.Untrack("room:t"+strconv.Itoa(i), i)
		}
	}
	tr.flush()
	c.add(2 * time.Second)
	tr.housekeep(c.now())
	tr.mu.Lock()
	got, odd := tr.chans.n, tr.channel("room:t1")
	tr.mu.Unlock()
	if got != chans/2 || odd == nil {
		t.Fatalf("%d channels after half went idle", got)
	}
	for i := range chans {
		if i%2 == 1 {
			tr.Untrack("room:t"+strconv.Itoa(i), i)
		}
	}
	tr.flush()
	c.add(2 * time.Second)
	tr.housekeep(c.now())
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.chans.n != 0 || tr.chans.slots != nil {
		t.Fatalf("%d channels, %d slots after all went idle", tr.chans.n, len(tr.chans.slots))
	}
}
