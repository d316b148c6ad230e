package bench

import (
	"math/bits"
	"sync/atomic"
)

// Histogram layout: values (microseconds) below 64 have a bucket each;
// above, every power of two is split into 32 buckets, so a bucket is at
// most ~3 % wide. Values are capped at 2^36 µs (about 19 hours).
const (
	histExact   = 64
	histSub     = 32
	histMaxBits = 36
	// HistBuckets is the number of buckets of a latency histogram.
	HistBuckets = histExact + (histMaxBits-6)*histSub
)

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	if v >= 1<<histMaxBits {
		v = 1<<histMaxBits - 1
	}
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 6 // v>>e is in [32, 64)
	return histExact + (e-1)*histSub + int(v>>e) - histSub
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < histExact {
		return int64(i), int64(i)
	}
	k := i - histExact
	e := k/histSub + 1
	sub := int64(k%histSub + histSub)
	return sub << e, (sub+1)<<e - 1
}

// Hist is a fixed-size, lock-free histogram of microsecond values: Add
// never allocates.
type Hist struct {
	b [HistBuckets]atomic.Int64
}

// Add counts one value (µs).
func (h *Hist) Add(us int64) { h.b[histIndex(us)].Add(1) }

// Sparse returns the non-empty buckets as [index, count] pairs.
func (h *Hist) Sparse() [][2]int64 {
	var out [][2]int64
	for i := range h.b {
		if c := h.b[i].Load(); c != 0 {
			out = append(out, [2]int64{int64(i), c})
		}
	}
	return out
}

// Counts is a plain (non-atomic) histogram with the layout of Hist, used
// to add up and subtract workers' snapshots.
type Counts []int64

// NewCounts returns an empty Counts.
func NewCounts() Counts { return make(Counts, HistBuckets) }

// AddSparse adds [index, count] pairs; out-of-range indexes are ignored.
func (c Counts) AddSparse(pairs [][2]int64) {
	for _, p := range pairs {
		if p[0] >= 0 && int(p[0]) < len(c) {
			c[p[0]] += p[1]
		}
	}
}

// Sub returns c - base, bucket by bucket.
func (c Counts) Sub(base Counts) Counts {
	out := NewCounts()
	for i := range c {
		out[i] = c[i]
		if i < len(base) {
			out[i] -= base[i]
		}
	}
	return out
}

// Total is the number of values counted.
func (c Counts) Total() int64 {
	var n int64
	for _, x := range c {
		n += x
	}
	return n
}

// Quantile returns the value (µs, the middle of its bucket) at or below
// which a fraction q of the values lie; 0 for an empty histogram.
func (c Counts) Quantile(q float64) float64 {
	n := c.Total()
	if n == 0 {
		return 0
	}
	rank := int64(q*float64(n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, x := range c {
		seen += x
		if seen >= rank {
			lo, hi := histBounds(i)
			return float64(lo+hi) / 2
		}
	}
	lo, hi := histBounds(len(c) - 1)
	return float64(lo+hi) / 2
}

// Max returns the upper bound (µs) of the highest non-empty bucket.
func (c Counts) Max() float64 {
	for i := len(c) - 1; i >= 0; i-- {
		if c[i] != 0 {
			_, hi := histBounds(i)
			return float64(hi)
		}
	}
	return 0
}
