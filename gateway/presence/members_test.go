package presence

import (
	"math/rand/v2"
	"testing"

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

func (f *fakeInstance) PresenceConn() transport.Conn { return f.conn }
func (f *fakeInstance) PresenceJoinRef() phoenix.Ref { return f.ref }
