package memory_test

import (
	"slices"
	"testing"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
)

func TestStreamModel(t *testing.T) {
	s := memory.NewStream()
	e := s.Epoch()
	var a, b []uint64
	for range 5 {
		a = append(a, s.Publish("room:a"))
		b = append(b, s.Publish("room:b"))
	}
	if p := s.Replay("room:a", broker.Position{Epoch: e, Offset: a[1]}); p.Reason != "" || len(p.Messages) != 3 || p.Messages[0].Prev != a[1] {
		t.Fatalf("replay: %+v", p)
	}
	// A subject purge with seq cuts room:b's front: a loss for positions
	// before the cut, none for room:a.
	s.Purge("room:b", b[3], 0)
	if lost, cause := s.Lost("room:b", 0); !lost || cause != memory.CausePurge {
		t.Fatalf("lost %v %q", lost, cause)
	}
	if lost, _ := s.Lost("room:b", b[2]); lost {
		t.Fatal("loss reported after the cut")
	}
	if lost, _ := s.Lost("room:a", 0); lost {
		t.Fatal("room:a lost nothing")
	}
	// The per-channel limit cuts at once when lowered.
	s.SetLimits(0, 2)
	if got := s.Stored("room:a", 0); !slices.Equal(got, a[3:]) {
		t.Fatalf("room:a after limit 2: %v", got)
	}
	// A moderator's removal is no loss; a clear is told.
	if !s.Remove("room:a", a[4]) || s.Remove("room:a", b[4]) {
		t.Fatal("remove")
	}
	if got := s.Stored("room:a", 0); !slices.Equal(got, a[3:4]) {
		t.Fatalf("after removal: %v", got)
	}
	s.Clear("room:b")
	if p := s.Replay("room:b", broker.Position{Epoch: e, Offset: b[4]}); p.Reason != broker.ReasonHistoryCleared {
		t.Fatalf("across a clear: %+v", p)
	}
	if p := s.Replay("room:b", broker.Position{Epoch: e, Offset: s.Last() + 1}); p.Reason != broker.ReasonOffsetAhead {
		t.Fatalf("ahead: %+v", p)
	}
	s.Recreate()
	if p := s.Replay("room:a", broker.Position{Epoch: e}); p.Reason != broker.ReasonEpochChanged {
		t.Fatalf("old epoch: %+v", p)
	}
	if seq := s.Publish("room:a"); seq != 1 {
		t.Fatalf("new incarnation starts at %d", seq)
	}
	// A whole purge beyond the last sequence moves it on, as JetStream does.
	s.Purge("", 10, 0)
	if seq := s.Publish("room:a"); seq != 10 {
		t.Fatalf("after compact to 10: %d", seq)
	}
}
