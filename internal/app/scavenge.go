package app

import (
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/fabric-rt/fabric/gateway"
)

// Returning a connection storm's garbage to the OS once the storm is over.
//
// A burst of connects and joins allocates far more than the state it leaves
// behind (handshake buffers, join replies, presence_state frames), and the
// heap grows to hold it. The collector frees that garbage, but the runtime's
// background scavenger hands free pages back to the OS slowly (about 1 % of
// a CPU) and only down to about 1.1× the collector's next heap goal, so 10 s
// after a storm the gateway's RSS still carries much of it: an SRE sizing by
// RSS sees the storm, not the connections (bench/results/idle-*-scavenge.txt:
// 2.02 → 1.28 KiB per connection, 10,000 over 100 rooms). So once
// the connection and join counters have not moved for a few seconds after
// at least scavengeMinEvents events, the gateway calls debug.FreeOSMemory
// once: a forced collection plus a full scavenge, off the hot path, at most
// once per scavengeMinGap. A steady churn never settles and never triggers
// it; there the background scavenger keeps up.

const (
	scavengeTick      = time.Second
	scavengeSettle    = 3                // ticks without a connection or join event
	scavengeMinEvents = 1000             // events since the last return that make a storm
	scavengeMinGap    = 60 * time.Second // between two returns
)

// scavenger decides, one tick at a time, when a storm has settled. Its
// fields are the goroutine's own; tick is called from one goroutine.
type scavenger struct {
	activity  func() uint64 // a count that grows with every connect, close and join
	free      func()        // returns free memory to the OS
	settle    int           // quiet ticks before free
	minEvents uint64
	minGap    int // ticks between two frees

	last      uint64 // activity at the previous tick
	base      uint64 // activity at the last free (or at start)
	quiet     int    // ticks since activity last moved
	sinceFree int    // ticks since the last free
}

func newScavenger(activity func() uint64, free func()) *scavenger {
	a := activity()
	return &scavenger{activity: activity, free: free, settle: scavengeSettle, minEvents: scavengeMinEvents,
		minGap: int(scavengeMinGap / scavengeTick), last: a, base: a, sinceFree: int(scavengeMinGap / scavengeTick)}
}

// tick samples the activity once and frees if a storm has just settled; it
// reports whether it freed.
func (s *scavenger) tick() bool {
	s.sinceFree++
	a := s.activity()
	if a != s.last {
		s.last, s.quiet = a, 0
		return false
	}
	s.quiet++
	if a < s.base {
		// The count is nearly monotone, not exactly (LongPoll sessions
		// are a gauge; the WebSocket counters are read apart): a fall
		// is no storm.
		s.base = a
	}
	if s.quiet < s.settle || a-s.base < s.minEvents || s.sinceFree < s.minGap {
		return false
	}
	s.base, s.sinceFree = a, 0
	s.free()
	return true
}

// gatewayActivity counts connection and join events: accepted WebSocket
// connections (open plus closed), LongPoll sessions, and join attempts.
// Stats allocates its maps; once a second that is nothing.
func gatewayActivity(gw *gateway.Gateway) func() uint64 {
	return func() uint64 {
		st := gw.Stats()
		n := uint64(st.Transport.Open) + uint64(st.LongPoll.Sessions)
		for _, v := range st.Transport.Closes {
			n += v
		}
		for _, v := range st.Sessions.Joins {
			n += v
		}
		return n
	}
}

// freeOSMemory is debug.FreeOSMemory, logged with what it returned and
// what it took (one line per storm).
func freeOSMemory(log *slog.Logger) func() {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	return func() {
		metrics.Read(sample)
		before := sample[0].Value.Uint64()
		start := time.Now()
		debug.FreeOSMemory()
		took := time.Since(start)
		metrics.Read(sample)
		log.Info("returned free heap to the OS after a connection storm",
			"released_bytes", int64(sample[0].Value.Uint64())-int64(before), "took", took)
	}
}

// runScavenger ticks s until stop is closed; done is closed on return.
func runScavenger(s *scavenger, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(scavengeTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.tick()
		}
	}
}
