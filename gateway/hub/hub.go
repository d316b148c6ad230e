// Package hub is the gateway's channel registry: for every topic with local
// members it holds exactly one broker subscription, and it fans each
// message out to the members, encoded once per protocol variant.
//
// Concurrency: every method is safe for concurrent use. Fan-out runs on the
// broker's delivery goroutine for that subscription and never blocks:
// transport.Conn.Send only queues, and a connection that cannot keep up is
// closed by its transport (4008) rather than slowing the channel.
package hub

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/broker"
)

const shards = 64

// Config configures a Hub.
type Config struct {
	Broker broker.Broker
	// LeaveGrace keeps a channel's subscription this long after its last
	// member left, so a client that rejoins at once (reconnect, page reload)
	// does not cost an unsubscribe/subscribe round trip (default 2 s).
	LeaveGrace time.Duration
	// SubscribeTimeout bounds the broker subscription of a first join
	// (default 5 s).
	SubscribeTimeout time.Duration
	Logger           *slog.Logger
}

// Member is one channel instance of one connection.
type Member struct {
	Conn    transport.Conn
	Version phoenix.Version
	// Key identifies the instance (the session's channel pointer); the
	// same key must be used to leave.
	Key any
}

// Hub is the registry.
type Hub struct {
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard

	channels     atomic.Int64
	delivered    atomic.Uint64
	encodeErrors atomic.Uint64
}

type shard struct {
	mu     sync.Mutex
	topics map[string]*channel
}

type channel struct {
	h     *Hub
	topic string
	ready chan struct{} // closed once the subscription is settled
	err   error         // set before ready is closed
	sub   broker.Subscription

	mu      sync.RWMutex
	members []Member
	index   map[any]int
	grace   *time.Timer // pending drop after the last leave; guarded by the shard lock
}

// New returns a Hub.
func New(cfg Config) *Hub {
	if cfg.LeaveGrace <= 0 {
		cfg.LeaveGrace = 2 * time.Second
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].topics = make(map[string]*channel)
	}
	return h
}

func (h *Hub) shard(topic string) *shard {
	return &h.shards[maphash.String(h.seed, topic)%shards]
}

// TryJoin adds m to topic without blocking when the topic's subscription is
// already live, and reports whether it did. Most joins take this path; only
// the first join of a topic on this gateway waits for the broker.
func (h *Hub) TryJoin(topic string, m Member) bool {
	sh := h.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.topics[topic]
	if ch == nil {
		return false
	}
	select {
	case <-ch.ready:
		if ch.err != nil {
			return false
		}
	default:
		return false
	}
	ch.add(m)
	return true
}

// Join adds m to topic, subscribing on the broker if this is the topic's
// first member here. It returns once deliveries to m have started or the
// subscription failed; it blocks, so callers run it off the event loop.
func (h *Hub) Join(ctx context.Context, topic string, m Member) error {
	sh := h.shard(topic)
	sh.mu.Lock()
	ch := sh.topics[topic]
	first := ch == nil
	if first {
		ch = &channel{h: h, topic: topic, ready: make(chan struct{}), index: make(map[any]int)}
		sh.topics[topic] = ch
		h.channels.Add(1)
	}
	ch.add(m)
	sh.mu.Unlock()

	if first {
		sctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
		sub, err := h.cfg.Broker.Subscribe(sctx, topic, ch.deliver)
		cancel()
		ch.sub, ch.err = sub, err
		close(ch.ready)
		sh.mu.Lock()
		switch {
		case err != nil:
			if sh.topics[topic] == ch {
				delete(sh.topics, topic)
				h.channels.Add(-1)
			}
		case ch.len() == 0 && ch.grace == nil:
			// Everyone left while we subscribed; Leave deferred the drop to us.
			ch.grace = time.AfterFunc(h.cfg.LeaveGrace, func() { h.drop(ch) })
		}
		sh.mu.Unlock()
	}
	select {
	case <-ch.ready:
	case <-ctx.Done():
		h.Leave(topic, m.Key)
		return ctx.Err()
	}
	if ch.err != nil {
		ch.remove(m.Key)
		return ch.err
	}
	return nil
}

// Leave removes the member with key from topic. When the last member
// leaves, the subscription is dropped after LeaveGrace unless someone joins
// again meanwhile.
func (h *Hub) Leave(topic string, key any) {
	sh := h.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.topics[topic]
	if ch == nil || !ch.remove(key) {
		return
	}
	if ch.len() > 0 {
		return
	}
	select {
	case <-ch.ready:
	default:
		return // the first joiner is still subscribing; it settles the channel
	}
	if ch.grace == nil {
		ch.grace = time.AfterFunc(h.cfg.LeaveGrace, func() { h.drop(ch) })
	}
}

func (h *Hub) drop(ch *channel) {
	sh := h.shard(ch.topic)
	sh.mu.Lock()
	if sh.topics[ch.topic] != ch || ch.len() > 0 {
		sh.mu.Unlock()
		return
	}
	delete(sh.topics, ch.topic)
	h.channels.Add(-1)
	sh.mu.Unlock()
	if ch.sub != nil {
		if err := ch.sub.Unsubscribe(); err != nil {
			h.cfg.Logger.Warn("hub: unsubscribe failed", "topic", ch.topic, "err", err)
		}
	}
}

// Close drops every subscription now (used at shutdown).
func (h *Hub) Close() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		chs := make([]*channel, 0, len(sh.topics))
		for _, ch := range sh.topics {
			chs = append(chs, ch)
		}
		clear(sh.topics)
		for _, ch := range chs {
			if ch.grace != nil {
				ch.grace.Stop()
			}
		}
		sh.mu.Unlock()
		for _, ch := range chs {
			h.channels.Add(-1)
			<-ch.ready
			if ch.sub != nil {
				ch.sub.Unsubscribe()
			}
		}
	}
}

// Stats is a snapshot of hub counters.
type Stats struct {
	Channels     int    // topics with a subscription on this gateway
	Delivered    uint64 // messages handed to connections
	EncodeErrors uint64 // messages that could not be framed (e.g. a binary event over 255 bytes)
}

// Stats returns a snapshot.
func (h *Hub) Stats() Stats {
	return Stats{Channels: int(h.channels.Load()), Delivered: h.delivered.Load(), EncodeErrors: h.encodeErrors.Load()}
}

// Members returns the number of local members of topic.
func (h *Hub) Members(topic string) int {
	sh := h.shard(topic)
	sh.mu.Lock()
	ch := sh.topics[topic]
	sh.mu.Unlock()
	if ch == nil {
		return 0
	}
	return ch.len()
}

// --- channel ---

// add runs under the shard lock; ch.mu guards members against fan-out.
func (ch *channel) add(m Member) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.grace != nil {
		ch.grace.Stop()
		ch.grace = nil
	}
	if _, ok := ch.index[m.Key]; ok {
		return
	}
	ch.index[m.Key] = len(ch.members)
	ch.members = append(ch.members, m)
}

func (ch *channel) remove(key any) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	i, ok := ch.index[key]
	if !ok {
		return false
	}
	last := len(ch.members) - 1
	if i != last {
		ch.members[i] = ch.members[last]
		ch.index[ch.members[i].Key] = i
	}
	ch.members[last] = Member{}
	ch.members = ch.members[:last]
	delete(ch.index, key)
	return true
}

func (ch *channel) len() int {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	return len(ch.members)
}

// deliver fans one message out. Frames are built lazily, at most once per
// variant, and the same *transport.Message (so the same framed bytes) goes
// to every member of that variant.
func (ch *channel) deliver(msg *broker.Message) {
	var enc encoder
	enc.msg = msg
	n := 0
	ch.mu.RLock()
	for _, m := range ch.members {
		for _, out := range enc.frames(ch.h, m.Version) {
			if out != nil && m.Conn.Send(out) {
				n++
			}
		}
	}
	ch.mu.RUnlock()
	ch.h.delivered.Add(uint64(n))
}

// encoder caches the encodings of one message.
type encoder struct {
	msg    *broker.Message
	v1, v2 [2]*transport.Message
	done1  bool
	done2  bool
}

// ref is the frame's ref slot: the stream offset in a persistent namespace
// (phoenix.js hands it to channel.on handlers as the second argument).
func (e *encoder) ref() phoenix.Ref {
	if e.msg.Offset == 0 {
		return phoenix.Null
	}
	return phoenix.R(strconv.FormatUint(e.msg.Offset, 10))
}

func (e *encoder) frames(h *Hub, v phoenix.Version) []*transport.Message {
	m := e.msg
	if v == phoenix.V1 {
		if !e.done1 {
			e.done1 = true
			payload := m.Payload
			if m.Binary {
				// v1 has no binary frames: the payload travels as base64.
				payload = phoenix.AppendBase64Payload(nil, m.Payload)
			}
			e.v1[0] = transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, e.ref(), m.Topic, m.Event, payload))
		}
		return e.v1[:]
	}
	if !e.done2 {
		e.done2 = true
		if !m.Binary {
			e.v2[0] = transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, e.ref(), m.Topic, m.Event, m.Payload))
		} else if b, err := phoenix.AppendBinaryBroadcast(nil, m.Topic, m.Event, m.Payload); err != nil {
			h.encodeErrors.Add(1)
			h.cfg.Logger.Warn("hub: cannot frame binary message", "topic", m.Topic, "err", err)
		} else {
			e.v2[0] = transport.NewBinary(b)
			if m.Offset != 0 {
				// A binary broadcast has no ref slot; its offset follows
				// in a text frame the JS helper consumes.
				e.v2[1] = transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, e.ref(), m.Topic, "fabric:offset", []byte("null")))
			}
		}
	}
	return e.v2[:]
}
