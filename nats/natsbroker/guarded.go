package natsbroker

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
)

// guarded is the core every channel subscription of this package shares:
// it gives broker.Subscription's guarantee (a shard's goroutine may have
// taken a message of the subscription off its queue when Unsubscribe runs,
// so a callback could start after Unsubscribe returned). Handlers run with
// mu held and check closed.
type guarded struct {
	mu     sync.Mutex // held while a handler runs; unsubscribe waits on it
	sub    *nats.Subscription
	sh     *shard // the dispatch shard sub delivers into
	closed bool
}

// subscribe subscribes cb (which takes g.mu itself) to subj on a dispatch
// shard (shards.go) and returns once the server registered it.
func (b *Broker) subscribe(ctx context.Context, g *guarded, subj string, cb nats.MsgHandler) error {
	if err := b.subscribeAsync(g, subj, cb); err != nil {
		return err
	}
	if err := b.roundTrip(ctx); err != nil {
		_ = g.unsubscribe()
		return err
	}
	return nil
}

// subscribeAsync is subscribe without waiting for the server: for a caller
// whose next request on the connection is the wait (the server processes
// a connection's protocol in order, so its answer comes after the
// subscription was registered).
func (b *Broker) subscribeAsync(g *guarded, subj string, cb nats.MsgHandler) error {
	// Holding the lock keeps the callback from reading g.sub before it is
	// set (a message can arrive before the subscribe call returns).
	g.mu.Lock()
	sub, sh, err := b.disp.subscribe(subj, cb)
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.sub, g.sh = sub, sh
	g.mu.Unlock()
	return nil
}

// unsubscribe stops delivery: no handler call starts after it returns, and
// a call in progress has finished. It must not be called from inside the
// subscription's own handler (that would deadlock). Calling it again, or
// after the connection closed, returns nil.
func (g *guarded) unsubscribe() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if g.sub == nil {
		return nil
	}
	err := g.sub.Unsubscribe()
	g.sh.remove(g.sub)
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		// Nothing is left on the server to remove.
		return nil
	}
	return err
}
