package hub

import (
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Stats: the hub's counters and the fan-out latency histogram.

// Stats is a snapshot of hub counters.
type Stats struct {
	Channels int // topics with a subscription on this gateway
	// RingBytes is what the persistent channels' rings of recent messages
	// hold, in entry costs (see Config.RingBudget).
	RingBytes int64
	// Received counts live messages the broker handed to the hub for
	// fan-out: one per message per channel, whether or not the channel
	// had members at that moment (one in its leave grace has none), and
	// before the hub's own never-twice check.
	Received     uint64
	Delivered    uint64 // live messages handed to connections (one per member and message)
	Replayed     uint64 // missed messages sent to resuming members
	EncodeErrors uint64 // messages that could not be framed (e.g. a binary event over 255 bytes)
	// Resumes counts resume outcomes (joins with a position) by reason:
	// "" for recovered, else broker.ReasonEpochChanged, ReasonHistoryGone,
	// ReasonOffsetAhead, ReasonHistoryCleared, or "other" for a reason a broker made up. Every
	// key is present. A resume that failed before it had an outcome (the
	// subscription or the first fetch failed) is not counted here.
	Resumes map[string]uint64
	// Fanout is the fan-out latency histogram (see FanoutBuckets).
	Fanout Latency
}

// Stats returns a snapshot.
func (h *Hub) Stats() Stats {
	st := Stats{Channels: int(h.channels.Load()), RingBytes: h.ringBytes.Load(), Received: h.received.Load(), Delivered: h.delivered.Load(),
		Replayed: h.replayed.Load(), EncodeErrors: h.encodeErrors.Load(),
		Resumes: make(map[string]uint64, len(resumeReasons)), Fanout: h.fanout.snapshot()}
	for i, r := range resumeReasons {
		st.Resumes[r] = h.resumes[i].Load()
	}
	return st
}

// resumeReasons indexes Hub.resumes; "" is recovered.
var resumeReasons = [...]string{"", broker.ReasonEpochChanged, broker.ReasonHistoryGone, broker.ReasonOffsetAhead, broker.ReasonHistoryCleared, "other"}

// countResume records the outcome of a resume once the hub decided it.
func (h *Hub) countResume(r JoinResult) {
	if !r.Resumed {
		return
	}
	i := len(resumeReasons) - 1 // "other"
	if r.Recovered {
		i = 0
	} else {
		for j, reason := range resumeReasons[1 : len(resumeReasons)-1] {
			if r.Reason == reason {
				i = j + 1
			}
		}
	}
	h.resumes[i].Add(1)
}

// FanoutBuckets are the upper bounds of the fan-out latency histogram,
// 1 ms to 10 s; slower messages land in a last, unbounded bucket.
var FanoutBuckets = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Latency is a snapshot of the fan-out latency histogram: for every live
// message that carried its publish time (broker.Message.Published) and
// had at least one local member, the time from publishing until the hub
// had handed its frames to every member's transport.Conn.Send (for
// WebSocket, written to the socket or queued on the connection; for
// LongPoll, buffered for the next poll). One observation per message per
// gateway, taken after the fan-out loop. The publish time comes from
// another clock (the publisher's or the NATS server's), so skew between
// hosts shifts it; a negative difference counts as 0.
type Latency struct {
	// Counts[i] is the number of observations in (FanoutBuckets[i-1],
	// FanoutBuckets[i]]; the last element counts those over the last
	// bound. Not cumulative.
	Counts [len(FanoutBuckets) + 1]uint64
	Sum    time.Duration // of every observation, in microsecond steps
}

// Count is the number of observations.
func (l Latency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// latency is the live histogram: one atomic counter per bucket and the sum
// in microseconds (a uint64 of nanoseconds would wrap after about three
// weeks of 1 M messages/s at 10 ms each). Observing allocates nothing.
type latency struct {
	counts [len(FanoutBuckets) + 1]atomic.Uint64
	sumUS  atomic.Uint64
}

func (l *latency) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(FanoutBuckets) && d > FanoutBuckets[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sumUS.Add(uint64(d / time.Microsecond))
}

func (l *latency) snapshot() Latency {
	var s Latency
	for i := range l.counts {
		s.Counts[i] = l.counts[i].Load()
	}
	s.Sum = time.Duration(l.sumUS.Load()) * time.Microsecond
	return s
}
