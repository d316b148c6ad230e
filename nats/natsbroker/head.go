package natsbroker

import (
	"context"
	"sync"
	"time"
)

// The position of an empty channel. A channel with no message and no mark
// starts at the stream's last sequence: nothing of the channel exists up
// to it. Reading it is a stream-info request to the stream leader (about
// 5.5 KB allocated in nats-server), and with one channel per user every
// join starts an empty channel. A value read at most recentLastAge ago
// serves instead, for every channel starting meanwhile; that is as
// correct as a fresh one:
//
//   - No message of the channel is lost: Direct Get found none on its
//     subject after the live subscription was registered, so every
//     message of it is stored later, with a sequence above the stream's
//     last at that time, hence above the cached value, and arrives on the
//     live feed (or is fetched when the chain shows a gap).
//   - The position is never ahead of the stream: the value was the
//     stream's own last sequence, cached per epoch (a recreated or
//     restored stream is another epoch and reads afresh), and a purge
//     never lowers the last sequence.
//   - A resume from it is judged like one from a fresh value
//     (positionValid: still stored, or 0 on a stream that never dropped
//     a message); the value is at most recentLastAge older, so its
//     message leaves the stream at most that much earlier under
//     retention, and a client resuming after that is told history_gone
//     rather than missing anything.
const recentLastAge = time.Second

// recentLast is a namespace's stream last sequence as recently read. mu is
// held across the request, so concurrent starts wait for one read rather
// than each making its own.
type recentLast struct {
	mu    sync.Mutex
	epoch string
	last  uint64
	at    time.Time // when the read was sent
}

// recentLastSeq is the last sequence of n's stream in epoch, read at most
// recentLastAge ago.
func (b *Broker) recentLastSeq(ctx context.Context, n *nsState, epoch string) (uint64, error) {
	c := &n.recent
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch == epoch && !c.at.IsZero() && time.Since(c.at) < recentLastAge {
		return c.last, nil
	}
	at := time.Now()
	_, last, err := b.streamState(ctx, n)
	if err != nil {
		return 0, err
	}
	// Kept only when the epoch did not change during the read: a reading
	// of a recreated stream must not be filed under the old epoch.
	if n.getEpoch() == epoch {
		c.epoch, c.last, c.at = epoch, last, at
	}
	return last, nil
}
