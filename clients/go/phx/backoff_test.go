package phx

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	// Without jitter (r=1) the delay doubles up to the cap.
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		if got := b.delay(n, 1); got != want*time.Millisecond {
			t.Errorf("attempt %d: %v, want %v", n, got, want*time.Millisecond)
		}
	}
	// The jitter spreads over [d/2, d].
	if got := b.delay(2, 0); got != 200*time.Millisecond {
		t.Errorf("r=0: %v", got)
	}
	// Random draws stay inside the band and are not all equal.
	seen := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		d := b.Delay(3)
		if d < 400*time.Millisecond || d > 800*time.Millisecond {
			t.Fatalf("Delay(3) = %v outside [400ms, 800ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct delays in 200 draws: no jitter", len(seen))
	}
	// Huge attempt counts do not overflow.
	if got := b.delay(1000, 1); got != time.Second {
		t.Errorf("attempt 1000: %v", got)
	}
	// Zero values are usable.
	if got := (Backoff{}).delay(0, 1); got <= 0 {
		t.Errorf("zero Backoff: %v", got)
	}
}
