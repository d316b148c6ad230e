package presence

import (
	"fmt"
	"testing"
	"time"
)

// Under churn the flush interval stretches: a flush that queued more
// diff frames than busyDiffRate allows for the time it waited doubles the
// wait before the next, up to maxFlushSlowdown × Flush; one that queued
// less than a quarter of that halves it back. Joiners' presence_state
// frames are not diffs and do not count.
func TestFlushPacedUnderChurn(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	f := tr.cfg.Flush
	members := int(busyDiffRate*f.Seconds()) + 2 // over two rooms, each under the member cap
	for i := 0; i < members; i++ {
		cl := newClient()
		topic := fmt.Sprintf("room:pace-%d", i%2)
		tr.Track(topic, cl, cl.member(topic, fmt.Sprintf("u%d", i)))
	}
	waitSynced(t, tr, "room:pace-0")
	waitSynced(t, tr, "room:pace-1")
	diffFrames := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.diffFrames
	}
	tr.flush()
	if got := diffFrames(); got != 0 {
		t.Fatalf("a flush of joiners' states only counted %d diff frames", got)
	}
	// One more member in each room: a diff to every member already there.
	for i := 0; i < 2; i++ {
		cl := newClient()
		topic := fmt.Sprintf("room:pace-%d", i)
		tr.Track(topic, cl, cl.member(topic, fmt.Sprintf("late%d", i)))
	}
	tr.flush()
	frames := diffFrames()
	if frames != members {
		t.Fatalf("diff frames %d, want one per earlier member (%d)", frames, members)
	}
	// The same churn per flush: slower until the rate fits, then steady.
	every := tr.pace(f, frames)
	if every != 2*f {
		t.Fatalf("after a busy flush: next wait %v, want %v", every, 2*f)
	}
	if next := tr.pace(every, frames); next != every {
		t.Fatalf("churn within the rate at %v: next wait %v, want it kept", every, next)
	}
	// A flood of diffs: up to the cap, not beyond.
	for _, want := range []time.Duration{4 * f, 8 * f, 16 * f, 20 * f, 20 * f} {
		if every = tr.pace(every, 1_000_000); every != want {
			t.Fatalf("flood: next wait %v, want %v", every, want)
		}
	}
	// Quiet: back to Flush, halving.
	for _, want := range []time.Duration{10 * f, 5 * f, 5 * f / 2, 5 * f / 4, f, f} {
		if every = tr.pace(every, 0); every != want {
			t.Fatalf("quiet: next wait %v, want %v", every, want)
		}
	}
}
