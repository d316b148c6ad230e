// Package events hands connection lifecycle events (connect, join, leave,
// disconnect) to the bus from a goroutine of its own, so that emitting one
// never waits on the bus.
//
// Why: sessions emit on the WebSocket epoll loop (a connection closing)
// and under the hub's shard and channel locks (a join's Joined callback).
// nats.go holds its connection lock across each dial attempt while it
// reconnects (2 s each by default), so a direct nc.Publish there froze
// every connection of the loop, and every join and fan-out behind those
// locks, for as long as NATS was away. Events are best effort by contract
// (broker.Events): when the queue is full they are dropped and counted.
package events

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// DefaultSize is the queue's capacity when New is given 0: a few seconds
// of connects and disconnects of a busy gateway during a reconnect storm.
const DefaultSize = 8192

type event struct {
	kind, topic string
	body        []byte
}

// Queue is a bounded queue of lifecycle events drained into a
// broker.Events by one goroutine.
type Queue struct {
	bus     broker.Events
	ch      chan event
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	sent    atomic.Uint64
	dropped atomic.Uint64
}

// New starts the goroutine that drains the queue into bus. size <= 0
// means DefaultSize.
func New(bus broker.Events, size int) *Queue {
	if size <= 0 {
		size = DefaultSize
	}
	q := &Queue{bus: bus, ch: make(chan event, size), stop: make(chan struct{}), done: make(chan struct{})}
	go q.drain()
	return q
}

// Emit queues an event and returns at once; it never blocks. When the
// queue is full (the bus is stuck or away) the event is dropped and
// counted. Safe from any goroutine, including under locks.
func (q *Queue) Emit(kind, topic string, body []byte) {
	select {
	case q.ch <- event{kind, topic, body}:
	default:
		q.dropped.Add(1)
	}
}

func (q *Queue) drain() {
	defer close(q.done)
	for {
		select {
		case ev := <-q.ch:
			q.bus.Emit(ev.kind, ev.topic, ev.body)
			q.sent.Add(1)
		case <-q.stop:
			// Shutting down: send what is queued (the disconnects of
			// the last connections) without waiting for more.
			for {
				select {
				case ev := <-q.ch:
					q.bus.Emit(ev.kind, ev.topic, ev.body)
					q.sent.Add(1)
				default:
					return
				}
			}
		}
	}
}

// Dropped is the number of events dropped because the queue was full.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Sent is the number of events handed to the bus.
func (q *Queue) Sent() uint64 { return q.sent.Load() }

// Close sends what is queued and stops, waiting at most wait for it (an
// Emit stuck in the bus is left behind: events are best effort).
func (q *Queue) Close(wait time.Duration) {
	q.once.Do(func() { close(q.stop) })
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-q.done:
	case <-t.C:
	}
}
