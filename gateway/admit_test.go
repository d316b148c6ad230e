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

// A reconnect wave as large as the burst is admitted in one instant (the
// default: 10,000 clients of a gateway that died elsewhere, at 2,000/s),
// and what comes after it is paced at the rate: a sustained flood of
// 10,000 attempts a second for 10 s gets the burst once and then 2,000 a
// second, not more. Times are given, not read from the clock.
func TestAcceptBucketWaveThenFlood(t *testing.T) {
	const rate, burst = 2000, 10000
	var b acceptBucket
	t0 := time.Unix(1000, 0)
	for i := 0; i < burst; i++ {
		if !b.allow(rate, burst, t0) {
			t.Fatalf("connection %d of a %d wave refused", i+1, burst)
		}
	}
	if b.allow(rate, burst, t0) {
		t.Fatal("a connection beyond the burst admitted in the same instant")
	}
	admitted := 0
	for i := 1; i <= 100_000; i++ { // every 100 µs for 10 s
		if b.allow(rate, burst, t0.Add(time.Duration(i)*100*time.Microsecond)) {
			admitted++
		}
	}
	if want := 10 * rate; admitted < want-1 || admitted > want+1 {
		t.Fatalf("flood after the wave: %d admitted in 10 s, want %d (the rate)", admitted, want)
	}
	// Quiet for burst/rate seconds: the next wave is admitted whole.
	t1 := t0.Add(10*time.Second + burst/rate*time.Second)
	for i := 0; i < burst; i++ {
		if !b.allow(rate, burst, t1) {
			t.Fatalf("second wave: connection %d refused after %v of quiet", i+1, burst/rate*time.Second)
		}
	}
	if b.allow(rate, burst, t1) {
		t.Fatal("second wave: bucket refilled beyond its burst")
	}
}
