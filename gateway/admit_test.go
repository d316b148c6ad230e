package gateway

import (
	"testing"
	"time"
)

// The accept bucket starts full, refuses once empty and refills at the
// rate, never above the burst. Times are given, not read from the clock.
func TestAcceptBucket(t *testing.T) {
	var b acceptBucket
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !b.allow(2, 3, t0) {
			t.Fatalf("token %d of a burst of 3 refused", i+1)
		}
	}
	if b.allow(2, 3, t0) {
		t.Fatal("fourth connection in the same instant admitted")
	}
	if !b.allow(2, 3, t0.Add(500*time.Millisecond)) || b.allow(2, 3, t0.Add(500*time.Millisecond)) {
		t.Fatal("half a second at 2/s should give exactly one token")
	}
	// An earlier time (callers race for the lock) adds nothing.
	if b.allow(2, 3, t0) {
		t.Fatal("a time before the last refill added a token")
	}
	// A long pause refills to the burst, not beyond.
	t1 := t0.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if !b.allow(2, 3, t1) {
			t.Fatalf("after a pause: token %d refused", i+1)
		}
	}
	if b.allow(2, 3, t1) {
		t.Fatal("bucket refilled beyond its burst")
	}
	// Rate 0 is off.
	var off acceptBucket
	for i := 0; i < 1000; i++ {
		if !off.allow(0, 0, t0) {
			t.Fatal("rate 0 refused a connection")
		}
	}
}
