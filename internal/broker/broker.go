// Package broker is the port between the hub and the message bus. The hub
// speaks Phoenix topics ("room:lobby"); mapping them to subjects, streams and
// offsets is the adapter's business (nats/natsbroker). Stdlib only.
package broker

import (
	"context"
	"errors"
)

// ErrInvalidTopic is returned for a topic that cannot be mapped (empty
// segment, a segment that is exactly "*" or ">", too long, bad bytes).
var ErrInvalidTopic = errors.New("broker: invalid topic")

// Message is one message delivered on a topic.
type Message struct {
	Topic string
	// Event is the Phoenix event name (NATS header Fabric-Event, default "message").
	Event string
	// Payload is the body, forwarded as-is.
	Payload []byte
	// Binary is true when Payload is not JSON and must travel in a binary frame.
	Binary bool
	// Offset is the stream sequence in a persistent namespace, 0 otherwise.
	Offset uint64
}

// Handler receives messages of one subscription, one at a time, in order.
type Handler func(*Message)

// Subscription is an active subscription to one topic.
type Subscription interface {
	// Unsubscribe stops delivery; no handler call starts after it returns.
	Unsubscribe() error
}

// Broker is what the gateway needs from the bus.
type Broker interface {
	// ValidateTopic reports ErrInvalidTopic (wrapped) for a topic that can
	// never be subscribed or published to.
	ValidateTopic(topic string) error
	// Subscribe subscribes to topic and returns once the bus has registered
	// the interest, so that a message published after Subscribe returns is
	// delivered to h. It may block on a round trip to the bus; callers keep it
	// off latency-sensitive loops.
	Subscribe(ctx context.Context, topic string, h Handler) (Subscription, error)
	// Publish sends payload as event on topic and returns once the bus
	// accepted it.
	Publish(ctx context.Context, topic, event string, payload []byte) error
}
