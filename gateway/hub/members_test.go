package hub

import (
	"testing"

	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

type testSlotted struct{ slot Slot }

func (k *testSlotted) MemberSlot() *Slot { return &k.slot }

// A big channel's member list (past the doubling of small ones) leaves
// at most about an eighth of itself unused (append's growth left up to a
// quarter, and up to half below 256 members), and a key's Slot always
// names its place.
func TestMemberListGrowth(t *testing.T) {
	ch := &channel{}
	conn := transporttest.NewConn()
	keys := make([]*testSlotted, 5000)
	for i := range keys {
		keys[i] = &testSlotted{}
		ch.add(Member{Conn: conn, Key: keys[i]}, 0)
		if n, c := len(ch.members), cap(ch.members); n >= 2*growFrom && c > n+n/8+1 {
			t.Fatalf("%d members in a list of %d", n, c)
		}
	}
	if ch.index != nil {
		t.Fatal("a channel of slotted keys keeps an index")
	}
	for i := 0; i < len(keys); i += 2 {
		if !ch.remove(keys[i]) {
			t.Fatalf("key %d not found", i)
		}
	}
	for i, k := range keys {
		at := ch.find(k)
		if gone := i%2 == 0; gone != (at < 0) || (!gone && ch.members[at].Key != k) {
			t.Fatalf("key %d: found at %d", i, at)
		}
	}
}
