package ws

import "testing"

// The flush lists a broadcast to every connection grew are given back
// once bursts are small again, and kept while they stay big.
func TestTrimLists(t *testing.T) {
	l := &loop{}
	grow := func() {
		l.dirty = make([]*conn, 0, 10000)
		l.flushing = make([]*conn, 0, 10000)
	}
	grow()
	l.dirtyPeak = 9000
	l.trimLists()
	if cap(l.dirty) != 10000 || cap(l.flushing) != 10000 {
		t.Fatalf("lists trimmed while bursts are big: caps %d, %d", cap(l.dirty), cap(l.flushing))
	}
	if l.dirtyPeak != 0 {
		t.Fatalf("peak %d after a tick, want 0", l.dirtyPeak)
	}
	l.dirtyPeak = 10
	l.trimLists()
	if cap(l.dirty) != 0 || cap(l.flushing) != 0 {
		t.Fatalf("lists kept after a quiet second: caps %d, %d", cap(l.dirty), cap(l.flushing))
	}
	// A dirty list with connections waiting is not dropped.
	grow()
	l.dirty = append(l.dirty, &conn{})
	l.trimLists()
	if len(l.dirty) != 1 {
		t.Fatalf("a waiting connection was dropped from the dirty list")
	}
	// Small lists stay.
	l.dirty, l.flushing = make([]*conn, 0, trimFrom), make([]*conn, 0, trimFrom)
	l.trimLists()
	if cap(l.dirty) != trimFrom || cap(l.flushing) != trimFrom {
		t.Fatalf("small lists trimmed")
	}
}
