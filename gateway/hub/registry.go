package hub

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Registry: the topic → channel map (sharded), joining and leaving, the
// subscription's life (subscribe on the first join, drop after LeaveGrace)
// and a channel's member list.

type shard struct {
	mu     sync.Mutex
	topics map[string]*channel
}

func (h *Hub) shard(topic string) *shard {
	return &h.shards[maphash.String(h.seed, topic)%shards]
}

// Intern returns the hub's own copy of topic when the topic has a channel
// here, else topic: sessions keep it instead of their decoded copy, so the
// members of a channel share one string.
func (h *Hub) Intern(topic string) string {
	sh := h.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ch := sh.topics[topic]; ch != nil {
		return ch.topic
	}
	return topic
}

// TryJoin attaches m without blocking when the topic's subscription is live
// and nothing has to be fetched, and reports whether it did (or found
// that m withdrew: Listener.JoinReply said so, nothing was sent).
// Most joins take this path; the first join of a topic on this gateway, and resumes
// the ring does not cover, need Join.
func (h *Hub) TryJoin(topic string, m Member) bool {
	sh := h.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.topics[topic]
	if ch == nil || !ch.settled() || ch.err != nil {
		return false
	}
	ch.mu.Lock()
	handled, err := ch.attachNow(m)
	ch.mu.Unlock()
	if handled && err == nil {
		ch.stopGrace()
	}
	return handled // attached, or m withdrew (nothing sent)
}

// Join attaches m to topic, subscribing on the broker if this is the
// topic's first member here and replaying what m missed. It blocks, so
// callers run it off the event loop. On error m is not attached, and its
// join reply was not sent unless the connection closed mid-replay;
// ErrWithdrawn: it left while joining (nothing more is sent to it). A
// replay that cannot finish after the reply resets the member
// (Listener.Reset) and returns nil.
func (h *Hub) Join(ctx context.Context, topic string, m Member) error {
	sh := h.shard(topic)
	sh.mu.Lock()
	ch := sh.topics[topic]
	if ch == nil {
		ch = &channel{h: h, topic: topic, ready: make(chan struct{})}
		ch.persistent = h.hist != nil && h.cfg.Namespaces.Persistent(topic)
		ch.ring.total = &h.ringBytes
		sh.topics[topic] = ch
		h.channels.Add(1)
		if ch.persistent {
			h.persistent.Add(1)
		}
		go h.subscribe(ch)
	}
	ch.joining++
	ch.stopGrace()
	ready := ch.ready
	sh.mu.Unlock()
	defer h.doneJoining(ch)

	select {
	case <-ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if ch.err != nil {
		return ch.err
	}
	return ch.attach(ctx, m)
}

// subscribe settles a new channel's subscription. It runs on its own
// goroutine so that every joiner, the first included, waits with its own
// context.
func (h *Hub) subscribe(ch *channel) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	sub, err := h.cfg.Broker.Subscribe(ctx, ch.topic, ch.deliver)
	cancel()
	if err == nil {
		if hs, ok := sub.(broker.HeadSubscription); ok {
			head := hs.Head()
			ch.mu.Lock()
			if ch.epoch == "" {
				ch.epoch = head.Epoch
			}
			// Messages delivered while Subscribe returned already moved
			// the position past the head.
			if ch.ring.len() == 0 && head.Offset > ch.last {
				ch.last = head.Offset
			}
			ch.mu.Unlock()
		}
	}
	ch.sub, ch.err = sub, err
	sh := h.shard(ch.topic)
	sh.mu.Lock()
	close(ch.ready)
	ch.ready = settledReady
	switch {
	case err != nil:
		h.cfg.Logger.Warn("hub: subscribe failed", "topic", ch.topic, "err", err)
		if sh.topics[ch.topic] == ch {
			delete(sh.topics, ch.topic)
			h.forgetChannel(ch)
		}
	case ch.joining == 0 && ch.len() == 0:
		// Every joiner gave up while we subscribed.
		ch.startGrace()
	}
	sh.mu.Unlock()
}

func (h *Hub) doneJoining(ch *channel) {
	sh := h.shard(ch.topic)
	sh.mu.Lock()
	ch.joining--
	if ch.joining == 0 && ch.settled() && ch.err == nil && ch.len() == 0 && sh.topics[ch.topic] == ch {
		ch.startGrace()
	}
	sh.mu.Unlock()
}

// Leave removes the member with key from topic. When the last member
// leaves, the subscription is dropped after LeaveGrace unless someone joins
// again meanwhile.
func (h *Hub) Leave(topic string, key any) {
	sh := h.shard(topic)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.topics[topic]
	if ch == nil {
		return
	}
	ch.mu.Lock()
	removed := ch.remove(key)
	ch.endReplay(key) // a replay in progress sends nothing more
	empty := len(ch.members) == 0
	ch.mu.Unlock()
	if removed && empty && ch.joining == 0 && ch.settled() {
		ch.startGrace()
	}
}

func (h *Hub) drop(ch *channel) {
	sh := h.shard(ch.topic)
	sh.mu.Lock()
	if sh.topics[ch.topic] != ch || ch.joining > 0 || ch.len() > 0 {
		sh.mu.Unlock()
		return
	}
	delete(sh.topics, ch.topic)
	h.forgetChannel(ch)
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
		readies := make([]chan struct{}, 0, len(sh.topics))
		for _, ch := range sh.topics {
			chs = append(chs, ch)
			readies = append(readies, ch.ready)
			ch.stopGrace()
		}
		clear(sh.topics)
		sh.mu.Unlock()
		for i, ch := range chs {
			h.forgetChannel(ch)
			<-readies[i]
			if ch.sub != nil {
				ch.sub.Unsubscribe()
			}
		}
	}
}

// forgetChannel uncounts a channel leaving the registry and gives its
// ring's bytes back to the budget.
func (h *Hub) forgetChannel(ch *channel) {
	h.channels.Add(-1)
	if ch.persistent {
		h.persistent.Add(-1)
	}
	ch.mu.Lock()
	ch.ring.clear()
	ch.ring.total = nil // a late delivery no longer counts against the hub
	ch.mu.Unlock()
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

// settledReady is every settled channel's ready.
var settledReady = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// settled reports whether ch's subscription is settled (shard lock held).
func (ch *channel) settled() bool {
	select {
	case <-ch.ready:
		return true
	default:
		return false
	}
}

// startGrace and stopGrace run under the shard lock.
func (ch *channel) startGrace() {
	if ch.grace == nil {
		ch.grace = time.AfterFunc(ch.h.cfg.LeaveGrace, func() { ch.h.drop(ch) })
	}
}

func (ch *channel) stopGrace() {
	if ch.grace != nil {
		ch.grace.Stop()
		ch.grace = nil
	}
}

func (ch *channel) len() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return len(ch.members)
}

// indexFrom is the member count from which a channel keeps a key → slot
// map for keys without a Slot of their own: below it a scan is as fast,
// and a map costs 200+ bytes even for a channel of one (a user's private
// channel). Sessions' keys carry their Slot, so their channels keep no map.
const indexFrom = 16

// growFrom is the member count from which add grows the member list
// itself; below it append's doubling wastes little.
const growFrom = 64

// add and remove run under ch.mu.
func (ch *channel) add(m Member, skipTo uint64) {
	if ch.find(m.Key) >= 0 {
		return
	}
	if n := len(ch.members); n == cap(ch.members) && n >= growFrom {
		// Grown by an eighth rather than append's quarter (to double,
		// below 256): the unused tail is what every member of a big
		// channel pays for, and copying it more often costs little.
		grown := make([]member, n, n+n/8)
		copy(grown, ch.members)
		ch.members = grown
	}
	ch.members = append(ch.members, member{Conn: m.Conn, Key: m.Key, Version: m.Version, TextOnly: m.TextOnly})
	if skipTo > ch.last {
		if ch.ahead == nil {
			ch.ahead = make(map[any]uint64)
		}
		ch.ahead[m.Key] = skipTo
	}
	if ch.index == nil && len(ch.members) >= indexFrom && slotOf(m.Key) == nil {
		ch.index = make(map[any]int, 2*len(ch.members))
		for i := range ch.members {
			ch.placed(i)
		}
		return
	}
	ch.placed(len(ch.members) - 1)
}

// find returns key's slot, or -1.
func (ch *channel) find(key any) int {
	if sl := slotOf(key); sl != nil {
		// The Slot is checked against the list: a key's slot is only
		// ever written under this channel's lock, but a key that is no
		// member here must not be taken for the one in its old place.
		if i := int(sl.i) - 1; i >= 0 && i < len(ch.members) && ch.members[i].Key == key {
			return i
		}
		return -1
	}
	if ch.index != nil {
		if i, ok := ch.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range ch.members {
		if ch.members[i].Key == key {
			return i
		}
	}
	return -1
}

func (ch *channel) remove(key any) bool {
	i := ch.find(key)
	if i < 0 {
		return false
	}
	last := len(ch.members) - 1
	if i != last {
		ch.members[i] = ch.members[last]
		ch.placed(i)
	}
	ch.members[last] = member{}
	ch.members = ch.members[:last]
	ch.unplaced(key)
	if ch.ahead != nil {
		delete(ch.ahead, key)
		if len(ch.ahead) == 0 {
			ch.ahead = nil
		}
	}
	return true
}

// caughtUp forgets the members the live feed caught up with at offset
// (ch.mu held): they get every later message.
func (ch *channel) caughtUp(offset uint64) {
	for k, to := range ch.ahead {
		if to <= offset {
			delete(ch.ahead, k)
		}
	}
	if len(ch.ahead) == 0 {
		ch.ahead = nil
	}
}

func (ch *channel) pos() broker.Position { return broker.Position{Epoch: ch.epoch, Offset: ch.last} }
