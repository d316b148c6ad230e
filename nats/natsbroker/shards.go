package natsbroker

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
)

// Subscriptions without a goroutine each. nats.go starts a goroutine
// (waitForMsgs, about 3.5 KB of stack) for every subscription with a
// callback; a gateway has one subscription per channel it serves, so with
// one channel per user that goroutine was the largest per-connection cost
// (docs/performance.md, "Where it goes, one channel per user"). Instead
// every channel subscription is a ChanSubscribe into one of a fixed set of
// shards, each drained by one goroutine that hands the message to its
// subscription's callback. A subscription always lands in the same shard
// (the shard is chosen by a hash of its subject), so its messages keep
// their order. A namespace's live wildcard (wildcard.go) queues each of
// its messages in the shard of the message's subject: the one the
// channel's own subscription would use.
//
// What a full shard means: nats.go drops the message and counts it on the
// subscription (Subscription.Dropped), exactly as it does for a callback
// subscription over its pending limit, so the existing accounting keeps
// working unchanged: a live feed's Prev chain and drop watcher refill the
// gap from the stream, an ephemeral subscription counts the drop and logs
// it. One shard is shared by many channels, so one handler that blocks
// (a live feed filling a gap from the stream) delays the others of its
// shard by as long; their messages queue meanwhile.

const (
	// shardCount is the number of dispatch goroutines: a few per core
	// keep channels' handlers running in parallel.
	shardCount = 8
	// shardQueue bounds one shard's queue (a pointer a message, 256 KiB
	// a shard) unless Config.PendingMsgsLimit asks for fewer.
	shardQueue = 1 << 15
)

type dispatcher struct {
	nc     *nats.Conn
	queue  int // capacity of a shard's queue
	shards [shardCount]shard
}

type shard struct {
	ch chan *nats.Msg

	mu      sync.Mutex // guards subs and running; held across ChanSubscribe
	subs    map[*nats.Subscription]nats.MsgHandler
	running bool          // a goroutine drains ch
	wake    chan struct{} // capacity 1: the last subscription left
}

func newDispatcher(nc *nats.Conn, queue int) *dispatcher {
	d := &dispatcher{nc: nc, queue: queue}
	for i := range d.shards {
		d.shards[i] = shard{ch: make(chan *nats.Msg, queue), subs: map[*nats.Subscription]nats.MsgHandler{},
			wake: make(chan struct{}, 1)}
	}
	return d
}

// shardOf is FNV-1a of the subject (no allocation).
func (d *dispatcher) shardOf(subj string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(subj); i++ {
		h ^= uint32(subj[i])
		h *= 16777619
	}
	return &d.shards[h%shardCount]
}

// subscribe subscribes cb to subj. cb runs on the shard's goroutine, one
// message at a time, in order; it must check itself whether its
// subscription was closed meanwhile (guarded does).
func (d *dispatcher) subscribe(subj string, cb nats.MsgHandler) (*nats.Subscription, *shard, error) {
	sh := d.shardOf(subj)
	// Holding mu until cb is registered: a message can arrive before
	// ChanSubscribe returns, and the shard goroutine must find its callback.
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sub, err := d.nc.ChanSubscribe(subj, sh.ch)
	if err != nil {
		return nil, nil, err
	}
	d.addLocked(sh, sub, cb)
	return sub, sh, nil
}

// addLocked registers cb for the messages of key in sh (sh.mu held) and
// starts the shard's goroutine if needed.
func (d *dispatcher) addLocked(sh *shard, key *nats.Subscription, cb nats.MsgHandler) {
	sh.subs[key] = cb
	if !sh.running {
		sh.running = true
		go sh.run(d.nc)
	}
}

// addAll registers cb for key in every shard: a namespace's wildcard,
// whose messages are queued in their own subject's shard (wildcard.go).
func (d *dispatcher) addAll(key *nats.Subscription, cb nats.MsgHandler) {
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		d.addLocked(sh, key, cb)
		sh.mu.Unlock()
	}
}

// barrier returns once every shard has handled what was queued in it
// before the call (or ctx ended): a marker message goes through each
// queue behind them.
func (d *dispatcher) barrier(ctx context.Context) error {
	for i := range d.shards {
		if d.nc.IsClosed() {
			return nats.ErrConnectionClosed // the shards stopped
		}
		sh := &d.shards[i]
		key := new(nats.Subscription) // the marker's identity, never subscribed
		done := make(chan struct{})
		sh.mu.Lock()
		d.addLocked(sh, key, func(*nats.Msg) { close(done) })
		sh.mu.Unlock()
		var err error
		select {
		case sh.ch <- &nats.Msg{Sub: key}:
			select {
			case <-done:
			case <-ctx.Done():
				err = ctx.Err()
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		sh.remove(key)
		if err != nil {
			return err
		}
	}
	return nil
}

// remove forgets sub (after it was unsubscribed from nats.go): messages of
// it still queued are discarded. The shard's goroutine ends when its last
// subscription is gone.
func (sh *shard) remove(sub *nats.Subscription) {
	sh.mu.Lock()
	delete(sh.subs, sub)
	empty := len(sh.subs) == 0
	sh.mu.Unlock()
	if empty {
		select {
		case sh.wake <- struct{}{}:
		default:
		}
	}
}

// run drains the shard until its last subscription is removed or the
// connection closes (nats.go then drops every subscription without telling
// anyone else, and the goroutine must not outlive it).
func (sh *shard) run(nc *nats.Conn) {
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if nc.IsClosed() {
		sh.stop()
		return
	}
	for {
		select {
		case m := <-sh.ch:
			sh.mu.Lock()
			cb := sh.subs[m.Sub]
			sh.mu.Unlock()
			if cb != nil {
				cb(m)
			}
		case <-sh.wake:
			sh.mu.Lock()
			if len(sh.subs) == 0 {
				sh.running = false
				sh.mu.Unlock()
				return
			}
			sh.mu.Unlock()
		case <-closed:
			sh.stop()
			return
		}
	}
}

func (sh *shard) stop() {
	sh.mu.Lock()
	sh.running = false
	sh.mu.Unlock()
}
