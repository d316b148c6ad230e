package natsbroker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// resyncTimeout bounds one catch-up (every live channel's Direct Gets).
const resyncTimeout = time.Minute

// ResyncStream is Resync for the channels of one stream: call it when the
// stream answers again after being out of reach (its home region cut off,
// no leader), since what it stored meanwhile may never have come live.
// The other namespaces' channels are not read.
func (b *Broker) ResyncStream(ctx context.Context, stream string) {
	for _, n := range b.namespaces {
		if n.stream == stream {
			b.refreshEpoch(ctx, n)
		}
	}
	for _, s := range b.liveSubs() {
		if s.ns.stream == stream {
			s.resync(ctx)
		}
	}
}

// The broker catches its channels up by itself when the bus comes back, so
// whoever owns the connection need not reach into it: after nats.go
// reconnected (watchReconnects: nats.go's status listeners allow more than
// one, the connection's ReconnectHandler stays the owner's), after the
// Link saw the connection answer again without a reconnect, and when a
// watched stream answers again (SetLink with a Watcher).

// watchReconnects resyncs every live channel after each reconnect that ch
// (a nats.go status listener for CONNECTED, registered by New so that no
// reconnect slips by before this runs) reports: core messages published
// while the connection was away are only in the streams. It runs until
// Close.
func (b *Broker) watchReconnects(ch chan nats.Status) {
	defer b.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-b.stop:
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			b.background(b.Resync)
		}
	}
}

// Watcher is a Link that also tells when the link comes back after being
// declared down and when a watched stream answers again
// (natslink.Monitor implements it).
type Watcher interface {
	Link
	// Watch registers up and streamUp; they are called on the Watcher's
	// goroutine and must not block.
	Watch(up func(), streamUp func(stream string))
}

// watchLink registers the broker's catch-ups with a Watcher.
func (b *Broker) watchLink(w Watcher) {
	w.Watch(func() {
		// Back after a silence nats.go did not notice (no reconnect, so
		// no resync from watchReconnects): catch the channels up all the
		// same.
		b.background(b.Resync)
	}, func(stream string) {
		// A stream that was out of reach (its home region cut off)
		// stored messages the live feed never brought.
		b.background(func(ctx context.Context) { b.ResyncStream(ctx, stream) })
	})
}

// background runs f off the caller's goroutine (a nats.go or Link
// callback), bounded by resyncTimeout and ended by Close.
func (b *Broker) background(f func(context.Context)) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
		defer cancel()
		go func() { // Close ends it early
			select {
			case <-b.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		f(ctx)
	}()
}
