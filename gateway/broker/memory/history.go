package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// HistoryBroker is a Broker whose persistent namespaces keep history in a
// modelled stream (Stream): publishes get offsets chained by Prev,
// subscriptions report their head, Replay answers from the model's ground
// truth, and moderation (ClearChannel, RemoveMessage) resets the live
// subscriptions of the channel as natsbroker's marks do. Hub and session
// tests use it to run history without NATS.
type HistoryBroker struct {
	*Broker

	mu      sync.Mutex
	streams map[string]*Stream // namespace → stream
	// msgs is the stored content per stream and offset: each namespace
	// has a stream of its own, whose offsets overlap the others'.
	msgs map[stored]*broker.Message
	pos  map[string]uint64 // topic → last position delivered live
}

type stored struct {
	st  *Stream
	seq uint64
}

var _ broker.History = (*HistoryBroker)(nil)

// NewHistory returns a HistoryBroker whose given namespaces are persistent
// (each has a stream; the gateway learns which from its namespace policy).
func NewHistory(namespaces ...string) *HistoryBroker {
	h := &HistoryBroker{Broker: New(), streams: map[string]*Stream{}, msgs: map[stored]*broker.Message{}, pos: map[string]uint64{}}
	for _, ns := range namespaces {
		h.streams[ns] = NewStream()
	}
	return h
}

func (h *HistoryBroker) stream(topic string) *Stream {
	ns, _, _ := strings.Cut(topic, ":")
	return h.streams[ns]
}

// Stream returns namespace ns's stream (nil if ns is not persistent), for
// tests that cut or purge it.
func (h *HistoryBroker) Stream(ns string) *Stream { return h.streams[ns] }

// Publish implements broker.Broker: on a persistent topic the message is
// stored and delivered with its offset.
func (h *HistoryBroker) Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error) {
	st := h.stream(topic)
	if st == nil {
		return h.Broker.Publish(ctx, topic, event, payload)
	}
	if err := h.ValidateTopic(topic); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, ok := h.pos[topic]
	if !ok {
		prev = st.Head(topic)
	}
	seq := st.Publish(topic)
	m := &broker.Message{Topic: topic, Event: event, Payload: append([]byte(nil), payload...),
		Binary: !(utf8.Valid(payload) && json.Valid(payload)), Offset: seq, Prev: prev}
	h.msgs[stored{st, seq}] = m
	h.pos[topic] = seq
	h.Inject(*m)
	return seq, nil
}

// Subscribe implements broker.Broker; subscriptions to persistent topics
// are broker.HeadSubscriptions.
func (h *HistoryBroker) Subscribe(ctx context.Context, topic string, fn broker.Handler) (broker.Subscription, error) {
	st := h.stream(topic)
	h.mu.Lock() // no publish between the head and the registration
	defer h.mu.Unlock()
	sub, err := h.Broker.Subscribe(ctx, topic, fn)
	if err != nil || st == nil {
		return sub, err
	}
	return headSub{Subscription: sub, head: broker.Position{Epoch: st.Epoch(), Offset: st.Head(topic)}}, nil
}

type headSub struct {
	broker.Subscription
	head broker.Position
}

func (s headSub) Head() broker.Position { return s.head }

// Replay implements broker.History from the model (up to max messages).
func (h *HistoryBroker) Replay(ctx context.Context, topic string, from broker.Position, max int) (broker.Page, error) {
	st := h.stream(topic)
	if st == nil {
		return broker.Page{}, fmt.Errorf("memory: topic %q has no history", topic)
	}
	if err := ctx.Err(); err != nil {
		return broker.Page{}, err
	}
	p := st.Replay(topic, from)
	if p.Reason != "" {
		return p, nil
	}
	if max > 0 && len(p.Messages) > max {
		p.Messages, p.Done = p.Messages[:max], false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, m := range p.Messages {
		full := *h.msgs[stored{st, m.Offset}]
		full.Prev = m.Prev
		p.Messages[i] = &full
	}
	return p, nil
}

// ClearChannel clears topic's history and resets its live subscriptions
// (control.Moderator).
func (h *HistoryBroker) ClearChannel(ctx context.Context, topic string) error {
	st := h.stream(topic)
	if st == nil {
		return fmt.Errorf("memory: topic %q has no history", topic)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reset(topic, st, st.Clear(topic))
	return nil
}

// RemoveMessage removes the message at offset from topic's history and
// resets its live subscriptions (control.Moderator).
func (h *HistoryBroker) RemoveMessage(ctx context.Context, topic string, offset uint64) error {
	st := h.stream(topic)
	if st == nil {
		return fmt.Errorf("memory: topic %q has no history", topic)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !st.Remove(topic, offset) {
		return fmt.Errorf("memory: no message of %q at %d", topic, offset)
	}
	h.reset(topic, st, st.Head(topic))
	return nil
}

// reset tells topic's subscribers to start over from at (h.mu held).
func (h *HistoryBroker) reset(topic string, st *Stream, at uint64) {
	at = max(at, st.Head(topic))
	h.pos[topic] = at
	h.Inject(broker.Message{Topic: topic, Reset: true, Epoch: st.Epoch(), Offset: at})
}

// Recreate deletes namespace ns's stream and creates it again (a new
// epoch, sequences from 1), resetting the live subscriptions of its
// channels into the new incarnation as natsbroker does when its stream is
// recreated.
func (h *HistoryBroker) Recreate(ns string) {
	st := h.streams[ns]
	if st == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st.Recreate()
	h.Broker.mu.Lock()
	var topics []string
	for topic := range h.Broker.subs {
		if h.stream(topic) == st {
			topics = append(topics, topic)
		}
	}
	h.Broker.mu.Unlock()
	for k := range h.msgs {
		if k.st == st {
			delete(h.msgs, k)
		}
	}
	for topic := range h.pos {
		if h.stream(topic) == st {
			delete(h.pos, topic)
		}
	}
	for _, topic := range topics {
		h.reset(topic, st, 0)
	}
}
