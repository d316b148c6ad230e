// Package memory is an in-memory broker.Broker for unit tests of the hub,
// the session and the publisher. Stdlib only.
//
// It mirrors the delivery contract of the NATS adapter: Subscribe registers
// synchronously, each subscription gets the messages published after it, in
// order, on its own goroutine (like nats.go), and Unsubscribe guarantees no
// handler call starts after it returns. Topics are validated with a smaller
// rule set than nats/subject but the same outcomes for the usual cases.
//
// Fault injection: set SubscribeErr, SubscribeDelay or PublishErr before the
// call they should affect (or between calls ordered by the test). They are
// read under the broker's lock, so a change is seen by later calls.
package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// MaxTopicLen mirrors nats/subject.MaxTopicLen.
const MaxTopicLen = 255

// Broker is an in-memory broker. The zero value is ready to use.
type Broker struct {
	// SubscribeErr, when set, is returned by every Subscribe (after
	// SubscribeDelay) and no subscription is registered.
	SubscribeErr error
	// SubscribeDelay makes Subscribe wait this long (or until its ctx
	// ends, returning ctx.Err()) before registering.
	SubscribeDelay time.Duration
	// PublishErr, when set, is returned by every Publish; nothing is
	// delivered or recorded.
	PublishErr error

	mu        sync.Mutex
	subs      map[string]map[*subscription]struct{}
	subCalls  int
	published []broker.Message
}

var _ broker.Broker = (*Broker)(nil)

// New returns an empty Broker.
func New() *Broker { return &Broker{} }

// ValidateTopic implements broker.Broker.
func (b *Broker) ValidateTopic(topic string) error {
	invalid := func(reason string) error { return fmt.Errorf("%w: %s", broker.ErrInvalidTopic, reason) }
	switch {
	case topic == "":
		return invalid("empty")
	case len(topic) > MaxTopicLen:
		return invalid("longer than 255 bytes")
	case !utf8.ValidString(topic):
		return invalid("invalid UTF-8")
	}
	start := 0
	for i, r := range topic {
		if unicode.IsControl(r) {
			return invalid("control character")
		}
		if r == ':' {
			if err := checkSegment(topic[start:i]); err != nil {
				return invalid(err.Error())
			}
			start = i + 1
		}
	}
	if err := checkSegment(topic[start:]); err != nil {
		return invalid(err.Error())
	}
	return nil
}

func checkSegment(seg string) error {
	switch seg {
	case "":
		return fmt.Errorf("empty segment")
	case "*", ">":
		return fmt.Errorf("segment is a wildcard")
	}
	return nil
}

// Subscribe implements broker.Broker. The subscription is registered when
// it returns, so every later Publish reaches h.
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler) (broker.Subscription, error) {
	b.mu.Lock()
	b.subCalls++
	delay, serr := b.SubscribeDelay, b.SubscribeErr
	b.mu.Unlock()
	if err := b.ValidateTopic(topic); err != nil {
		return nil, err
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	s := &subscription{b: b, topic: topic, h: h, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[string]map[*subscription]struct{})
	}
	set := b.subs[topic]
	if set == nil {
		set = make(map[*subscription]struct{})
		b.subs[topic] = set
	}
	set[s] = struct{}{}
	b.mu.Unlock()
	go s.run()
	return s, nil
}

// Publish implements broker.Broker: the message is queued to every current
// subscriber of topic and recorded (see Published). Binary is set when
// payload is not valid JSON text.
func (b *Broker) Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error) {
	if err := b.ValidateTopic(topic); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m := broker.Message{
		Topic:   topic,
		Event:   event,
		Payload: append([]byte(nil), payload...),
		Binary:  !(utf8.Valid(payload) && json.Valid(payload)),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.PublishErr != nil {
		return 0, b.PublishErr
	}
	b.published = append(b.published, m)
	for s := range b.subs[topic] {
		s.enqueue(&m)
	}
	return 0, nil
}

// Inject queues m as is (Binary and Offset included) to every current
// subscriber of m.Topic, as a message arriving from the bus. It is not
// recorded in Published.
func (b *Broker) Inject(m broker.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs[m.Topic] {
		s.enqueue(&m)
	}
}

// Deliver calls the handler of every current subscriber of m.Topic with m
// on the calling goroutine and returns how many it called. A handler call
// is still serialized with that subscription's asynchronous deliveries, but
// Deliver is not ordered against messages queued by Publish or Inject.
// Benchmarks use it to measure fan-out without scheduler noise.
func (b *Broker) Deliver(m *broker.Message) int {
	b.mu.Lock()
	subs := make([]*subscription, 0, len(b.subs[m.Topic]))
	for s := range b.subs[m.Topic] {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	n := 0
	for _, s := range subs {
		if s.call(m) {
			n++
		}
	}
	return n
}

// Subscriptions returns the number of active subscriptions to topic.
func (b *Broker) Subscriptions(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[topic])
}

// SubscribeCalls returns how many times Subscribe was called, failed calls
// included.
func (b *Broker) SubscribeCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subCalls
}

// Published returns a copy of every message accepted by Publish, in the
// order Publish accepted them.
func (b *Broker) Published() []broker.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]broker.Message(nil), b.published...)
}

type subscription struct {
	b     *Broker
	topic string
	h     broker.Handler

	// callMu is held around every handler call, so calls are serialized
	// and Unsubscribe can wait for the one in progress.
	callMu sync.Mutex
	closed bool // guarded by callMu

	qmu   sync.Mutex
	queue []*broker.Message
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func (s *subscription) enqueue(m *broker.Message) {
	s.qmu.Lock()
	s.queue = append(s.queue, m)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) run() {
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		for {
			s.qmu.Lock()
			if len(s.queue) == 0 {
				s.qmu.Unlock()
				break
			}
			m := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.qmu.Unlock()
			if !s.call(m) {
				return
			}
		}
	}
}

// call runs the handler unless the subscription is closed.
func (s *subscription) call(m *broker.Message) bool {
	s.callMu.Lock()
	defer s.callMu.Unlock()
	if s.closed {
		return false
	}
	s.h(m)
	return true
}

// Unsubscribe implements broker.Subscription. It waits for a handler call
// in progress, so no handler runs once it returns; it must therefore not be
// called from the subscription's own handler. Idempotent.
func (s *subscription) Unsubscribe() error {
	s.b.mu.Lock()
	if set := s.b.subs[s.topic]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(s.b.subs, s.topic)
		}
	}
	s.b.mu.Unlock()
	s.callMu.Lock()
	s.closed = true
	s.callMu.Unlock()
	s.once.Do(func() { close(s.done) })
	return nil
}
