package transport

import (
	"sync"
	"sync/atomic"
)

// OutputBudget bounds the output a process holds for clients that do not
// take it, across every connection of every transport. Each connection
// already has its own bound (closed with CloseSlowConsumer over it); this
// one keeps many connections that each stay just under theirs from adding
// up to more memory than the process has.
//
// What counts is what a slow client keeps alive: the bytes of every frame
// queued on a connection whose socket has stopped taking bytes (WebSocket:
// EPOLLOUT armed) and every frame buffered for a LongPoll session, counted
// once per connection that holds it, shared or not. Frames that only wait
// for the WebSocket loop's next write are a burst in transit, not a slow
// client, and do not count (the per-connection bound makes the same cut).
//
// When the total goes over the limit, the connection holding the most
// counted output is closed with CloseSlowConsumer, then the next, until the
// total is back under it: healthy readers hold little and keep their
// messages; the slowest lose their connection and resume by offset.
//
// The hot path is one atomic add when a counted queue grows or shrinks and
// one atomic load per Send; choosing whom to cut scans the connections and
// runs only over the limit, one scan at a time.
type OutputBudget struct {
	limit int64
	used  atomic.Int64
	cuts  atomic.Uint64

	mu    sync.Mutex // one reclaim at a time; guards pools
	pools []Pool
}

// Pool is one transport's connections as the budget sees them.
type Pool interface {
	// Each calls f with every open connection holding counted output,
	// and that count. It must not wait for a connection's lock (a busy
	// one is skipped) nor call f with one held: it may run while the
	// caller's transport holds locks of its own.
	Each(f func(v Victim, counted int))
}

// Victim is a connection the budget may cut.
type Victim interface {
	// CutSlow closes the connection with CloseSlowConsumer; its counted
	// output leaves the budget. It reports whether it closed it (false:
	// already closing).
	CutSlow() bool
}

// A reclaim scans the connections at most maxScans times and cuts, from
// each scan, the largest ones until the total is within the limit (at most
// scanTop per scan): one scan per cut would cost a scan of every
// connection for each of them. The next Send over the limit (or the next
// WebSocket loop turn) goes on.
const (
	maxScans = 8
	scanTop  = 16
)

type candidate struct {
	v Victim
	n int
}

// NewOutputBudget returns a budget of limit bytes; limit ≤ 0 counts
// without ever cutting.
func NewOutputBudget(limit int64) *OutputBudget {
	return &OutputBudget{limit: max(limit, 0)}
}

// Register adds a transport's connections to those a reclaim may cut.
func (b *OutputBudget) Register(p Pool) {
	b.mu.Lock()
	b.pools = append(b.pools, p)
	b.mu.Unlock()
}

// Add counts n more bytes (n < 0: fewer).
func (b *OutputBudget) Add(n int) { b.used.Add(int64(n)) }

// Over reports whether the counted bytes exceed the limit.
func (b *OutputBudget) Over() bool { return b.limit > 0 && b.used.Load() > b.limit }

// Used is the number of bytes counted now.
func (b *OutputBudget) Used() int64 { return b.used.Load() }

// Limit is the budget (0: none).
func (b *OutputBudget) Limit() int64 { return b.limit }

// Cuts is the number of connections closed to stay within the budget.
func (b *OutputBudget) Cuts() uint64 { return b.cuts.Load() }

// Reclaim closes the connections holding the most counted output until the
// total is within the limit. The caller must hold no connection's lock (a
// victim's close takes its own). When another reclaim is running it returns
// at once: that one is already cutting, and a Send must not wait for it.
func (b *OutputBudget) Reclaim() {
	if !b.Over() || !b.mu.TryLock() {
		return
	}
	defer b.mu.Unlock()
	var top [scanTop]candidate
	keep := func(v Victim, n int) {
		// Insertion into the largest scanTop, largest first.
		i := scanTop
		for i > 0 && (top[i-1].v == nil || top[i-1].n < n) {
			i--
		}
		if i == scanTop {
			return
		}
		copy(top[i+1:], top[i:scanTop-1])
		top[i] = candidate{v, n}
	}
	for range maxScans {
		clear(top[:])
		for _, p := range b.pools {
			p.Each(keep)
		}
		if top[0].v == nil {
			return // nothing counted is cuttable now (busy or closing)
		}
		for _, c := range top {
			// A scan is a snapshot: sockets that stop taking bytes
			// after it count from then on. Cutting down a stale list
			// could reach small, healthy queues while a larger one
			// formed since, so only those within half of the largest
			// are cut from it; then the connections are scanned again.
			if c.v == nil || !b.Over() || 2*c.n < top[0].n {
				break
			}
			if c.v.CutSlow() {
				b.cuts.Add(1)
			}
		}
		if !b.Over() {
			return
		}
	}
}
