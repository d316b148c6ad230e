package presence

import (
	"fmt"
	"testing"
	"time"
)

// Under churn the flush interval stretches: a flush that queued more
// than busyDiffFrames diff frames doubles the wait before the next, up to
// maxFlushSlowdown × Flush, and quieter flushes bring it back. Joiners'
// presence_state frames are not diffs and do not count.
func TestFlushPacedUnderChurn(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	const members = busyDiffFrames + 2 // over two rooms, each under the member cap
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
	f := tr.cfg.Flush
	every := f
	for _, want := range []time.Duration{2 * f, 4 * f, 8 * f, 8 * f} {
		if every = tr.pace(every, frames); every != want {
			t.Fatalf("busy flush: next wait %v, want %v", every, want)
		}
	}
	for _, want := range []time.Duration{4 * f, 2 * f, f, f} {
		if every = tr.pace(every, busyDiffFrames); every != want {
			t.Fatalf("quiet flush: next wait %v, want %v", every, want)
		}
	}
}
