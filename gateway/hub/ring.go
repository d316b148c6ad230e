package hub

import (
	"sync/atomic"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Ring: a persistent channel's latest messages, kept for resumes, and the
// hub-wide byte budget every ring shares.

// ringLimit is what one channel's ring may hold now: its share of the
// hub's budget, at most RingBytes.
func (h *Hub) ringLimit() int {
	n := max(h.persistent.Load(), 1)
	return int(min(int64(h.cfg.RingBytes), h.cfg.RingBudget/n))
}

// checkBudget starts a sweep when the rings together hold more than the
// budget and grew by an eighth of it since the last sweep began (so sweeps
// stay rare, and never spin when every ring is down to its latest
// message): a channel trims its own ring to its share at every push, but
// a ring filled while there were fewer channels keeps its larger share
// until someone trims it.
func (h *Hub) checkBudget() {
	b, total := h.cfg.RingBudget, h.ringBytes.Load()
	if total <= b+b/8 || total <= h.swept.Load()+b/8 || !h.sweeping.CompareAndSwap(false, true) {
		return
	}
	h.swept.Store(total)
	go h.sweep()
}

// sweep trims every ring to the current share (one at a time, each under
// its channel's lock, none under a shard lock).
func (h *Hub) sweep() {
	defer h.checkBudget() // what grew while we swept
	defer h.sweeping.Store(false)
	var chs []*channel
	for i := range h.shards {
		sh := &h.shards[i]
		chs = chs[:0]
		sh.mu.Lock()
		for _, ch := range sh.topics {
			if ch.persistent {
				chs = append(chs, ch)
			}
		}
		sh.mu.Unlock()
		limit := h.ringLimit()
		for _, ch := range chs {
			ch.mu.Lock()
			ch.ring.trim(limit)
			ch.mu.Unlock()
		}
	}
}

// entry is one message with its encodings, shared by live fan-out and
// every replay that reads it from the ring.
type entry struct {
	msg *broker.Message
	enc encoder
}

// ring is a bounded FIFO of a persistent channel's latest messages
// (ch.mu held for every method).
type ring struct {
	buf   []*entry
	head  int // index of the oldest
	n     int
	bytes int           // sum of the entries' costs
	total *atomic.Int64 // the hub's sum over every ring (nil in tests)
}

// entryOverhead is what an entry costs besides its payload and frame:
// the entry and its encoder, the broker.Message, the frame's
// transport.Message, the ring slot.
const entryOverhead = 256

// cost is what keeping e in a ring costs: the payload three times (as
// received, in the Phoenix frame, and in that frame's cached WebSocket
// encoding; a second protocol version in use adds two more copies, not
// counted), plus the structures around them. Measured: a heap profile of
// rings full of 32 KB messages has the three copies.
func cost(e *entry) int {
	return 3*len(e.msg.Payload) + len(e.msg.Event) + entryOverhead
}

func (r *ring) add(n int) {
	r.bytes += n
	if r.total != nil {
		r.total.Add(int64(n))
	}
}

// clear drops every entry.
func (r *ring) clear() {
	r.add(-r.bytes)
	r.buf, r.head, r.n = nil, 0, 0
}

func (r *ring) len() int { return r.n }

func (r *ring) at(i int) *entry { return r.buf[(r.head+i)%len(r.buf)] }

// push appends e, evicting the oldest entries until at most max remain
// and their costs fit maxBytes; e itself is always kept.
func (r *ring) push(e *entry, max, maxBytes int) {
	if r.buf == nil {
		r.buf = make([]*entry, min(max, 64))
	}
	if r.n == len(r.buf) && len(r.buf) < max {
		nb := make([]*entry, min(max, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	c := cost(e)
	for r.n > 0 && (r.n == len(r.buf) || r.bytes+c > maxBytes) {
		old := r.at(0)
		r.add(-cost(old))
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
	r.add(c)
}

// trim evicts the oldest entries until the rest fit maxBytes, keeping
// the latest.
func (r *ring) trim(maxBytes int) {
	for r.n > 1 && r.bytes > maxBytes {
		old := r.at(0)
		r.add(-cost(old))
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
}

// backfill prepends fetched entries (chained, oldest first) that connect
// to the ring's oldest entry — or, for an empty ring, that end at the
// channel's last offset — as far as the ring has room; it never evicts
// newer entries for older ones.
func (r *ring) backfill(es []*entry, last uint64, max, maxBytes int) {
	if len(es) == 0 {
		return
	}
	newest := es[len(es)-1].msg.Offset
	if r.n == 0 {
		if newest != last {
			return
		}
	} else if newest < r.at(0).msg.Prev {
		return // a hole between the page and the ring
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if r.n > 0 && e.msg.Offset >= r.at(0).msg.Offset {
			continue // already in the ring
		}
		if r.n >= max || r.bytes+cost(e) > maxBytes {
			return
		}
		r.pushFront(e, max)
	}
}

func (r *ring) pushFront(e *entry, max int) {
	if r.buf == nil {
		r.buf = make([]*entry, min(max, 64))
	}
	if r.n == len(r.buf) {
		nb := make([]*entry, min(max, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = e
	r.n++
	r.add(cost(e))
}

// covers reports whether every message after offset x is in the ring: the
// oldest entry's Prev is at or before x (messages are chained by Prev).
func (r *ring) covers(x uint64) bool { return r.n > 0 && x >= r.at(0).msg.Prev }

func (r *ring) countAfter(x uint64) int {
	c := 0
	for i := r.n - 1; i >= 0 && r.at(i).msg.Offset > x; i-- {
		c++
	}
	return c
}

// after yields the entries with Offset > x, oldest first.
func (r *ring) after(x uint64) func(func(*entry) bool) {
	return func(yield func(*entry) bool) {
		start := r.n - r.countAfter(x)
		for i := start; i < r.n; i++ {
			if !yield(r.at(i)) {
				return
			}
		}
	}
}
