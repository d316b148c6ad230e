package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// rooms makes room:* persistent, as the hub's history tests need.
var rooms = namespace.MustNew(map[string]namespace.Namespace{"room": {History: true}})

// histBroker is a memory broker whose room:* topics are persistent and whose
// Replay always answers page. Its subscriptions have no head, so a
// channel's position stays epoch "" offset 0: enough to drive every
// resume outcome the hub decides.
type histBroker struct {
	*memory.Broker
	page broker.Page
}

func (b *histBroker) Replay(context.Context, string, broker.Position, int) (broker.Page, error) {
	return b.page, nil
}

// listener records the join result the hub reports to a member's key.
type listener struct{ got hub.JoinResult }

func (l *listener) JoinReply(r hub.JoinResult) (*transport.Message, bool) {
	l.got = r
	return nil, true
}
func (l *listener) Reset() {}

func TestStatsResumes(t *testing.T) {
	t.Parallel()
	b := &histBroker{Broker: memory.New(), page: broker.Page{Reason: broker.ReasonOffsetAhead}}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour})
	t.Cleanup(h.Close)
	join := func(resume *broker.Position) hub.JoinResult {
		t.Helper()
		m, _ := member(phoenix.V2)
		l := &listener{}
		m.Key = l
		m.Resume = resume
		mustJoin(t, h, "room:1", m)
		return l.got
	}
	join(nil) // a fresh join is not a resume
	if r := join(&broker.Position{Epoch: "", Offset: 0}); !r.Recovered {
		t.Fatalf("resume at the head: %+v", r)
	}
	if r := join(&broker.Position{Epoch: "old", Offset: 0}); r.Reason != broker.ReasonEpochChanged {
		t.Fatalf("resume from another epoch: %+v", r)
	}
	if r := join(&broker.Position{Epoch: "", Offset: 7}); r.Reason != broker.ReasonOffsetAhead {
		t.Fatalf("resume the broker refuses: %+v", r)
	}
	want := map[string]uint64{"": 1, broker.ReasonEpochChanged: 1, broker.ReasonHistoryGone: 0, broker.ReasonOffsetAhead: 1, broker.ReasonHistoryCleared: 0, "other": 0}
	got := h.Stats().Resumes
	if len(got) != len(want) {
		t.Fatalf("Resumes = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("Resumes = %v, want %v", got, want)
		}
	}
}

// One observation per message whatever the member count, none for a
// message without a publish time; every message counts as received.
func TestFanoutLatency(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	for range 3 {
		m, _ := member(phoenix.V2)
		mustJoin(t, h, "t", m)
	}
	const age = 30 * time.Millisecond
	stamped := &broker.Message{Topic: "t", Event: "e", Payload: []byte(`{}`), Published: time.Now().Add(-age)}
	if b.Deliver(stamped) != 1 {
		t.Fatal("hub is not subscribed")
	}
	b.Deliver(&broker.Message{Topic: "t", Event: "e", Payload: []byte(`{}`)})
	// A publisher clock ahead of ours: counted, as 0.
	b.Deliver(&broker.Message{Topic: "t", Event: "e", Payload: []byte(`{}`), Published: time.Now().Add(time.Hour)})

	st := h.Stats()
	if st.Received != 3 || st.Delivered != 9 {
		t.Fatalf("Received %d Delivered %d, want 3 and 9", st.Received, st.Delivered)
	}
	l := st.Fanout
	if l.Count() != 2 {
		t.Fatalf("%d observations, want 2: %+v", l.Count(), l)
	}
	if l.Counts[0] != 1 {
		t.Fatalf("future publish time not in the first bucket: %+v", l.Counts)
	}
	// Only lower bounds: the observation is at least the message's age.
	if l.Sum < age {
		t.Fatalf("Sum %v < %v", l.Sum, age)
	}
	i := 0
	for i < len(hub.FanoutBuckets) && hub.FanoutBuckets[i] < age {
		i++
	}
	var atLeastAge uint64
	for _, c := range l.Counts[i:] {
		atLeastAge += c
	}
	if atLeastAge != 1 {
		t.Fatalf("the %v-old message is not in a bucket ≥ %v: %+v", age, age, l.Counts)
	}
}

// Measuring fan-out latency adds no allocation: a stamped message costs
// what an unstamped one does.
func TestFanoutLatencyAllocs(t *testing.T) {
	br, _ := fanoutHub(t, 100, 0)
	plain := &broker.Message{Topic: "bench", Event: "news", Payload: []byte(`{"n":1}`)}
	stamped := *plain
	stamped.Published = time.Now()
	a := testing.AllocsPerRun(100, func() { br.Deliver(plain) })
	b := testing.AllocsPerRun(100, func() { br.Deliver(&stamped) })
	if b > a {
		t.Fatalf("%v allocs per stamped message, %v per plain one", b, a)
	}
}

// A replay page can run ahead of the gateway's live feed (the stream had
// stored messages whose live copies were still in flight): those arrive
// live after the member is attached, and must not reach it a second time.
func TestReplayAheadOfLiveNeverDuplicates(t *testing.T) {
	t.Parallel()
	msg := func(off uint64) *broker.Message {
		return &broker.Message{Topic: "room:ahead", Event: "m", Payload: []byte(`{}`), Offset: off, Prev: off - 1}
	}
	var page broker.Page
	for off := uint64(6); off <= 14; off++ {
		page.Messages = append(page.Messages, msg(off))
	}
	page.Done = true
	b := &histBroker{Broker: memory.New(), page: page}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour})
	t.Cleanup(h.Close)

	// The channel exists, its live feed is at 10, and only 10 is in the
	// ring: a member resuming from 5 needs the stream.
	first, _ := member(phoenix.V2)
	mustJoin(t, h, "room:ahead", first)
	if n := b.Deliver(msg(10)); n != 1 {
		t.Fatalf("live message reached %d subscriptions", n)
	}
	m, c := member(phoenix.V2)
	m.Resume = &broker.Position{Epoch: "", Offset: 5}
	mustJoin(t, h, "room:ahead", m)
	for off := uint64(11); off <= 15; off++ {
		b.Deliver(msg(off))
	}
	c.WaitLen(10, wait) // 6..14 replayed, then 15 live
	time.Sleep(20 * time.Millisecond)
	got := c.Sent()
	var offs []string
	for _, f := range got {
		offs = append(offs, string(f.Data[:bytesIndex(f.Data, ',', 2)]))
	}
	if len(got) != 10 {
		t.Fatalf("resuming member got %d frames, want 10 (6..15 once each): %v", len(got), offs)
	}
}

// bytesIndex returns the index of the n-th sep in b (len(b) if fewer).
func bytesIndex(b []byte, sep byte, n int) int {
	for i, c := range b {
		if c == sep {
			if n--; n == 0 {
				return i
			}
		}
	}
	return len(b)
}
