package events

import (
	"sync"
	"testing"
	"time"
)

// stuckBus blocks every Emit until release is closed.
type stuckBus struct {
	release chan struct{}
	mu      sync.Mutex
	got     []string
}

func (b *stuckBus) Emit(kind, topic string, _ []byte) {
	<-b.release
	b.mu.Lock()
	b.got = append(b.got, kind)
	b.mu.Unlock()
}

func TestEmitNeverBlocksAndCountsDrops(t *testing.T) {
	bus := &stuckBus{release: make(chan struct{})}
	q := New(bus, 4)
	start := time.Now()
	// One event is taken by the drain (stuck in the bus), four fill the
	// queue, the rest are dropped, and none of this may wait.
	for range 100 {
		q.Emit("connect", "", nil)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("100 Emits took %v with the bus stuck", d)
	}
	if d := q.Dropped(); d < 95 || d > 96 {
		t.Fatalf("dropped %d of 100 with a queue of 4 and the bus stuck, want 95 or 96", d)
	}
	close(bus.release)
	q.Close(5 * time.Second)
	if s, d := q.Sent(), q.Dropped(); s+d != 100 {
		t.Fatalf("sent %d + dropped %d != 100 emitted", s, d)
	}
}

func TestCloseSendsWhatIsQueued(t *testing.T) {
	bus := &stuckBus{release: make(chan struct{})}
	close(bus.release)
	q := New(bus, 16)
	for range 10 {
		q.Emit("disconnect", "", nil)
	}
	q.Close(5 * time.Second)
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if len(bus.got) != 10 {
		t.Fatalf("bus got %d events after Close, want 10", len(bus.got))
	}
}
