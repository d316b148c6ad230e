package natsbroker

import "context"

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
