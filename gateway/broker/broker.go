// Package broker is the port between the hub and the message bus. The hub
// speaks Phoenix topics ("room:lobby"); mapping them to subjects, streams and
// offsets is the adapter's business (nats/natsbroker). Stdlib only.
package broker

import (
	"context"
	"errors"
	"time"
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
	// Prev is the offset of the previous message on the same topic (0 when
	// there is none). Live messages and replay pages form one chain:
	// each message's Prev is the Offset of the one before it, so a consumer
	// can tell that it has seen every message after Prev.
	Prev uint64
	// Reset, on a live subscription, carries no payload: the topic's history
	// can no longer be trusted as a continuation of what was delivered (the
	// stream was recreated, or the gateway itself lost messages it cannot
	// refetch). Every client must rejoin and resume from its own offset.
	// Epoch and Offset then give the new position.
	Reset bool
	Epoch string
	// Published is when the message was published, if the bus says
	// (zero otherwise): the Fabric-Time header the publisher library and
	// the gateway put on core NATS publishes, else the time JetStream
	// stored it. Only the fan-out latency metric reads it.
	Published time.Time
}

// Position is a point in a persistent topic's history: an epoch (the
// stream's incarnation, opaque) and an offset (a stream sequence). An offset
// need not be a message of that topic: a client that joined an empty
// channel holds the stream's position at that time.
type Position struct {
	Epoch  string
	Offset uint64
}

// Reasons a position cannot be resumed from (part of the wire contract).
const (
	ReasonEpochChanged = "epoch_changed"
	ReasonHistoryGone  = "history_gone"
	ReasonOffsetAhead  = "offset_ahead"
	// ReasonHistoryCleared: a moderator cleared the channel's history
	// after the position (control.Moderator.ClearChannel).
	ReasonHistoryCleared = "history_cleared"
)

// Page is one page of replay.
type Page struct {
	// Messages after the requested position, in order, chained by Prev
	// (the first one's Prev is the requested offset).
	Messages []*Message
	// Reason is set when the position cannot be resumed from; Messages is
	// then empty.
	Reason string
	// Done is true when no message after the last one returned existed
	// when the page was read.
	Done bool
}

// History is implemented by brokers that keep history for some topics
// (which ones is namespace policy, gateway/namespace: the adapter is told
// the persistent namespaces' stream settings, the gateway asks the policy).
type History interface {
	// Replay returns up to max messages of topic after from. It verifies
	// that nothing between from and the first returned message was lost
	// (otherwise Reason is history_gone) and that from belongs to the
	// current epoch (epoch_changed) and is not in the future (offset_ahead).
	Replay(ctx context.Context, topic string, from Position, max int) (Page, error)
}

// HeadSubscription is implemented by subscriptions to persistent topics:
// the position of the last message on the topic when the subscription
// started (or the stream position if the topic had none). The first
// delivered message follows it.
type HeadSubscription interface {
	Subscription
	Head() Position
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
	// accepted it: for a persistent topic, once it is stored, with its
	// offset; for an ephemeral one, once the server processed it (offset 0).
	Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error)
}

// PushMeta describes the client behind a push routed to a service.
type PushMeta struct {
	Subject    string // the client's authenticated user (JWT sub), "" when anonymous
	ConnID     string // the connection, unique per gateway process
	JoinParams []byte // the channel's join params (JSON)
	// Assigns is the JSON object the connect and join hooks assigned to
	// the channel (nil: none).
	Assigns []byte
	// Sent is when the client's push arrived: the push's timeout counts
	// from it, queueing included (zero: from the Request call).
	Sent time.Time
}

// Reply is a service's answer to a routed push.
type Reply struct {
	OK bool
	// Response is the phx_reply response: JSON (an object, unless the
	// service erred), or opaque bytes when Binary.
	Response []byte
	// Binary marks a response that is not JSON: relayed as a binary
	// reply, as Phoenix does for {:binary, data}.
	Binary bool
}

// ErrTooLarge is returned by Publish and Request when the bus refuses the
// payload as over its size limit.
var ErrTooLarge = errors.New("broker: payload too large")

// ErrNoHandler is returned by Request when no service handles the topic.
var ErrNoHandler = errors.New("broker: no handler for pushes on this topic")

// Handlers is implemented by brokers that can route client pushes to
// backend services (Phoenix's handle_in, in any language with a NATS client).
// Which namespaces route their pushes, and how long a push may wait, is
// namespace policy (gateway/namespace).
type Handlers interface {
	// Request sends the push and waits for the service's reply, until ctx
	// ends (the caller sets the push's deadline).
	Request(ctx context.Context, topic, event string, payload []byte, meta PushMeta) (Reply, error)
}

// ErrUnavailable is wrapped by Health.Available's errors (and by what a
// request returns when it failed for that reason).
var ErrUnavailable = errors.New("bus unavailable")

// Health is implemented by brokers that know, without waiting, whether the
// bus can serve a topic right now.
type Health interface {
	// Available returns nil unless the bus (or the topic's history
	// store) is known to be away, in which case a join or push on topic
	// should fail at once rather than wait for its timeout. It never
	// blocks: it is called on event loops.
	Available(topic string) error
}

// Events is implemented by brokers that publish connection lifecycle
// events (best effort: may drop). Emit may wait on the bus; the gateway
// calls it only from its own queue (gateway/events), never on an event
// loop or under a lock.
type Events interface {
	Emit(kind, topic string, body []byte)
}

// Presence is implemented by brokers that carry presence between gateways.
// Messages are opaque to the broker (gateway/presence defines them); the
// broker only routes them per topic; which namespaces track presence is
// namespace policy (gateway/namespace).
type Presence interface {
	// PresenceSubscribe delivers every presence message published for
	// topic by any gateway (this one included) to h, one at a time, in
	// order. A message sent by PresenceRequest comes with a non-nil reply
	// that answers the requester. It returns once the bus registered the
	// interest.
	PresenceSubscribe(ctx context.Context, topic string, h func(msg []byte, reply func([]byte) error)) (Subscription, error)
	// PresencePublish sends msg to every gateway subscribed to topic's
	// presence, without waiting (at most once).
	PresencePublish(topic string, msg []byte) error
	// PresenceRequest publishes req to every gateway subscribed to topic's
	// presence and calls h with each answer until window elapsed, ctx
	// ended or h returned false.
	PresenceRequest(ctx context.Context, topic string, req []byte, window time.Duration, h func([]byte) bool) error
}
