package presence

import (
	"hash/maphash"
	"iter"
)

// table is an open-addressing hash set of pointers (linear probing, at
// most 3/4 full, no tombstones: a removal shifts the entries after it
// back): 8 bytes a slot, where a Go map of pointers spends 24 or more a
// slot with its key and control bytes. It holds a channel's members and
// the tracker's channels, of which there may be one per connection.
// Elements know their own hash (home); the zero E marks an empty slot.
type table[E homed] struct {
	slots []E // a power of two long
	n     int
}

type homed interface {
	comparable
	home() uint32
}

func (t *table[E]) mask() uint32 { return uint32(len(t.slots) - 1) }

// get is the element whose hash is h that match accepts (zero: none).
func (t *table[E]) get(h uint32, match func(E) bool) E {
	var zero E
	if t.n == 0 {
		return zero
	}
	for i := h & t.mask(); t.slots[i] != zero; i = (i + 1) & t.mask() {
		if e := t.slots[i]; e.home() == h && match(e) {
			return e
		}
	}
	return zero
}

// put adds e, which is not there yet.
func (t *table[E]) put(e E) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(8, len(t.slots)*2))
	}
	t.insert(e)
	t.n++
}

func (t *table[E]) insert(e E) {
	var zero E
	i := e.home() & t.mask()
	for t.slots[i] != zero {
		i = (i + 1) & t.mask()
	}
	t.slots[i] = e
}

// del removes the element whose hash is h that match accepts, shifting
// the elements after it back so that no lookup needs tombstones; a table
// left under 1/8 full shrinks (a leave storm gives its memory back).
func (t *table[E]) del(h uint32, match func(E) bool) {
	var zero E
	if t.n == 0 {
		return
	}
	mask := t.mask()
	i := h & mask
	for {
		e := t.slots[i]
		if e == zero {
			return // not there
		}
		if e.home() == h && match(e) {
			break
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; t.slots[j] != zero; j = (j + 1) & mask {
		// The element at j may fill the hole at i unless its home slot k
		// lies cyclically in (i, j]: a lookup from k would not pass i.
		k := t.slots[j].home() & mask
		if (i < j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		t.slots[i], i = t.slots[j], j
	}
	t.slots[i] = zero
	t.n--
	switch {
	case t.n == 0:
		t.slots = nil
	case len(t.slots) > 8 && t.n*8 < len(t.slots):
		t.resize(max(8, len(t.slots)/4))
	}
}

func (t *table[E]) resize(size int) {
	var zero E
	old := t.slots
	t.slots = make([]E, size)
	for _, e := range old {
		if e != zero {
			t.insert(e)
		}
	}
}

// all yields every element, in no particular order. The table must not
// change while it runs.
func (t *table[E]) all() iter.Seq[E] {
	return func(yield func(E) bool) {
		var zero E
		for _, e := range t.slots {
			if e != zero && !yield(e) {
				return
			}
		}
	}
}

// chanSeed hashes topics for the tracker's table of channels.
var chanSeed = maphash.MakeSeed()

func topicHash(topic string) uint32 { return uint32(maphash.String(chanSeed, topic)) }
func (ch *chanState) home() uint32  { return topicHash(ch.topic) }
func (t *Tracker) channel(topic string) *chanState {
	return t.chans.get(topicHash(topic), func(ch *chanState) bool { return ch.topic == topic })
}
