package hub

import (
	"testing"

	"github.com/fabric-rt/fabric/gateway/broker"
)

func TestRingBackfill(t *testing.T) {
	mk := func(prev, off uint64) *entry {
		return &entry{msg: &broker.Message{Prev: prev, Offset: off, Payload: []byte("x")}}
	}
	var r ring
	// Empty ring: a page ending at the channel's last offset is kept.
	r.backfill([]*entry{mk(10, 12), mk(12, 15)}, 16, 8, 1<<20)
	if r.len() != 0 {
		t.Fatal("page not reaching the last offset was kept")
	}
	r.backfill([]*entry{mk(10, 12), mk(12, 15)}, 15, 8, 1<<20)
	if r.len() != 2 || !r.covers(10) || r.covers(9) {
		t.Fatalf("len %d", r.len())
	}
	// A page connecting to the oldest entry extends coverage backwards.
	r.backfill([]*entry{mk(3, 5), mk(5, 10), mk(10, 12)}, 15, 8, 1<<20)
	if r.len() != 4 || !r.covers(3) || r.at(0).msg.Offset != 5 {
		t.Fatalf("after backfill: len %d first %d", r.len(), r.at(0).msg.Offset)
	}
	// A page with a hole before the ring is not kept.
	r.backfill([]*entry{mk(1, 2)}, 15, 8, 1<<20)
	if r.len() != 4 {
		t.Fatal("disconnected page kept")
	}
	// Capacity: never evict newer for older.
	var r2 ring
	for i := uint64(1); i <= 4; i++ {
		r2.push(mk(i-1, i), 4, 1<<20)
	}
	r2.backfill([]*entry{mk(0, 0)}, 4, 4, 1<<20)
	if r2.len() != 4 || r2.at(3).msg.Offset != 4 {
		t.Fatal("backfill evicted newer entries")
	}
}
