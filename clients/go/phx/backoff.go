package phx

import (
	"math/rand/v2"
	"time"
)

// Backoff is an exponential delay with jitter: attempt n (0-based) waits
// between half and all of min(Max, Min·Factor^n), uniformly. The random
// half spreads a fleet of clients that lost the same gateway at the same
// instant over time instead of having them all come back at once; the
// fixed half keeps a client from retrying in a tight loop.
type Backoff struct {
	Min    time.Duration // first delay (before jitter)
	Max    time.Duration // cap
	Factor float64       // growth per attempt; values below 1 mean 2
}

// Delay is the wait before attempt n (n counts failures so far, from 0).
func (b Backoff) Delay(n int) time.Duration { return b.delay(n, rand.Float64()) }

// delay is Delay with the random draw r in [0, 1) given (for tests).
func (b Backoff) delay(n int, r float64) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = time.Millisecond
	}
	if hi < lo {
		hi = lo
	}
	f := b.Factor
	if f < 1 {
		f = 2
	}
	d := float64(lo)
	for i := 0; i < n && d < float64(hi); i++ {
		d *= f
	}
	if d > float64(hi) {
		d = float64(hi)
	}
	return time.Duration(d/2 + r*d/2)
}

// Defaults: reconnects start fast (a gateway restart is usually brief) and
// settle at 10 s; rejoins of a channel the server refused or crashed follow
// phoenix.js's pace (1 s, 2 s, 5 s, then 10 s).
var (
	DefaultReconnect = Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Factor: 2}
	DefaultRejoin    = Backoff{Min: time.Second, Max: 10 * time.Second, Factor: 2}
)
