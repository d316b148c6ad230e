package natsbroker

import (
	"github.com/fabric-rt/fabric/gateway/broker"
)

// Link reports, without blocking, whether the NATS link and a JetStream
// stream can serve requests now (natslink.Monitor implements it).
type Link interface {
	Err() error
	StreamErr(stream string) error
}

// SetLink makes requests fail at once while l reports NATS away, and, when
// l is a Watcher, catches the channels up when it reports the link or a
// stream back. Call it before the broker is used (after EnsureStreams,
// whose streams a Link may watch).
func (b *Broker) SetLink(l Link) {
	b.link = l
	if w, ok := l.(Watcher); ok {
		b.watchLink(w)
	}
}

// Available implements broker.Health: nil unless the Link knows the bus
// (or, for a persistent topic, its stream) is away. Publish, Subscribe,
// Request and Replay check it first, so while NATS is known to be away
// they fail at once instead of each waiting out its own timeout.
func (b *Broker) Available(topic string) error {
	if b.link == nil {
		return nil
	}
	if n := b.namespaceOf(topic); n != nil {
		return b.link.StreamErr(n.stream)
	}
	return b.link.Err()
}

var _ broker.Health = (*Broker)(nil)
