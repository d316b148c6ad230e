package hub

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"github.com/fabric-rt/fabric/gateway/broker/memory"
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

// A member whose replay ran ahead of the live feed is remembered only
// until the live feed catches up, or it leaves: the common member keeps
// no offset at all.
func TestAheadForgotten(t *testing.T) {
	ch := &channel{persistent: true, last: 10}
	conn := transporttest.NewConn()
	a, b, c := &testSlotted{}, &testSlotted{}, &testSlotted{}
	ch.add(Member{Conn: conn, Key: a}, 14)
	ch.add(Member{Conn: conn, Key: b}, 12)
	ch.add(Member{Conn: conn, Key: c}, 9) // behind the feed: nothing to skip
	if len(ch.ahead) != 2 {
		t.Fatalf("ahead %v, want a and b", ch.ahead)
	}
	ch.caughtUp(12)
	if _, ok := ch.ahead[a]; !ok || len(ch.ahead) != 1 {
		t.Fatalf("ahead %v after 12, want a", ch.ahead)
	}
	ch.remove(a)
	if ch.ahead != nil {
		t.Fatalf("ahead %v after a left, want nil", ch.ahead)
	}
	ch.add(Member{Conn: conn, Key: a}, 20)
	ch.caughtUp(20)
	if ch.ahead != nil {
		t.Fatalf("ahead %v once caught up, want nil", ch.ahead)
	}
}

// TestRecordSizes keeps what every member and every live topic cost from
// growing unnoticed (docs/performance.md, "Where the memory goes"). A
// change that must grow them updates the bounds and the doc.
func TestRecordSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"member", unsafe.Sizeof(member{}), 40},
		{"channel", unsafe.Sizeof(channel{}), 224},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, over %d", c.name, c.size, c.max)
		}
	}
}

// A settled channel keeps no ready channel of its own.
func TestSettledChannelSharesReady(t *testing.T) {
	h := New(Config{Broker: memory.New(), LeaveGrace: time.Hour})
	defer h.Close()
	if err := h.Join(context.Background(), "room:r", Member{Conn: transporttest.NewConn(), Key: &testSlotted{}}); err != nil {
		t.Fatal(err)
	}
	sh := h.shard("room:r")
	sh.mu.Lock()
	ready := sh.topics["room:r"].ready
	sh.mu.Unlock()
	if ready != settledReady {
		t.Fatal("a settled channel keeps its own ready channel")
	}
	// Joins after it still go through, at once or waiting.
	if !h.TryJoin("room:r", Member{Conn: transporttest.NewConn(), Key: &testSlotted{}}) {
		t.Fatal("TryJoin of a settled channel failed")
	}
	if err := h.Join(context.Background(), "room:r", Member{Conn: transporttest.NewConn(), Key: &testSlotted{}}); err != nil {
		t.Fatal(err)
	}
	if n := h.Members("room:r"); n != 3 {
		t.Fatalf("%d members, want 3", n)
	}
}
