package app

import "testing"

// fakeActivity is a settable activity count.
type fakeActivity struct{ n uint64 }

func (f *fakeActivity) get() uint64 { return f.n }

func newTestScavenger(act *fakeActivity, frees *int) *scavenger {
	s := newScavenger(act.get, func() { *frees++ })
	s.settle, s.minEvents, s.minGap = 3, 100, 10
	return s
}

// ticks runs n ticks and returns how many freed.
func ticks(s *scavenger, n int) int {
	freed := 0
	for range n {
		if s.tick() {
			freed++
		}
	}
	return freed
}

// A storm (many events, then quiet) is followed by exactly one free, after
// the settle ticks; the quiet steady state after it frees nothing more.
func TestScavengerFreesOnceAfterStorm(t *testing.T) {
	act := &fakeActivity{n: 7}
	frees := 0
	s := newTestScavenger(act, &frees)
	if got := ticks(s, 20); got != 0 || frees != 0 {
		t.Fatalf("steady state before any storm: %d frees, want 0", frees)
	}
	for range 5 { // the storm: events on every tick
		act.n += 50
		if s.tick() {
			t.Fatal("freed during the storm")
		}
	}
	if got := ticks(s, 2); got != 0 {
		t.Fatal("freed before the settle ticks passed")
	}
	if got := ticks(s, 1); got != 1 {
		t.Fatalf("on the settle tick: %d frees, want 1", got)
	}
	if got := ticks(s, 50); got != 0 || frees != 1 {
		t.Fatalf("quiet after the storm: %d more frees (total %d), want 0 (1)", got, frees)
	}
}

// A steady churn never settles, and a few events are no storm: neither frees.
func TestScavengerIgnoresChurnAndSmallBursts(t *testing.T) {
	act := &fakeActivity{}
	frees := 0
	s := newTestScavenger(act, &frees)
	for range 100 { // churn: an event every tick
		act.n++
		s.tick()
	}
	if frees != 0 {
		t.Fatalf("steady churn: %d frees, want 0", frees)
	}
	// The churn's 100 events count once it settles: that was a storm.
	if ticks(s, 3); frees != 1 {
		t.Fatalf("after the churn settled: %d frees, want 1", frees)
	}
	for range 10 { // small bursts, each settling: 10 × 5 events = 50 < 100
		act.n += 5
		ticks(s, 5)
		if frees != 1 {
			t.Fatalf("small bursts: %d frees, want 1", frees)
		}
	}
}

// Two storms closer together than the minimum gap: the second is returned
// once the gap has passed, not at once.
func TestScavengerMinGap(t *testing.T) {
	act := &fakeActivity{}
	frees := 0
	s := newTestScavenger(act, &frees)
	act.n += 500
	ticks(s, 4) // 1 busy tick + 3 quiet
	if frees != 1 {
		t.Fatalf("first storm: %d frees, want 1", frees)
	}
	act.n += 500
	if got := ticks(s, 4); got != 0 {
		t.Fatal("second storm freed within the minimum gap")
	}
	if got := ticks(s, 10); got != 1 {
		t.Fatalf("second storm after the gap: %d frees, want 1", got)
	}
}

// The activity count falling (LongPoll sessions ending) is not taken for
// a storm.
func TestScavengerIgnoresFall(t *testing.T) {
	act := &fakeActivity{n: 50}
	frees := 0
	s := newTestScavenger(act, &frees)
	act.n = 10
	if got := ticks(s, 20); got != 0 {
		t.Fatalf("after the count fell: %d frees, want 0", got)
	}
}
