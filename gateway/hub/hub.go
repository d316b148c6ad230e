// Package hub is the gateway's channel registry: for every topic with local
// members it holds exactly one broker subscription, and it fans each
// message out to the members, encoded once per protocol variant.
//
// Persistent topics (the broker keeps history) also carry offsets: the hub
// keeps the channel's position and a ring of its latest messages, answers a
// fresh join with the position and a resume with exactly the messages the
// client missed — from the ring when it covers them, otherwise paged from
// the broker — and attaches the member to the live feed with no gap and no
// duplicate at the junction (both happen under the channel lock that
// fan-out takes).
//
// Concurrency: every method is safe for concurrent use. Fan-out runs on the
// broker's delivery goroutine for the subscription and never blocks:
// transport.Conn.Send only queues, and a connection that cannot keep up is
// closed by its transport (4008) rather than slowing the channel. Lock
// order: shard.mu before channel.mu; Member callbacks run under
// channel.mu and must not call back into the hub.
package hub

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

const shards = 64

// Ring defaults (Config.RingBytes, Config.RingBudget).
const (
	DefaultRingBytes  = 1 << 20
	DefaultRingBudget = 64 << 20
)

// Config configures a Hub.
type Config struct {
	Broker broker.Broker
	// Namespaces says which topics keep history (nil: none); their
	// channels need a broker that implements broker.History.
	Namespaces *namespace.Set
	// LeaveGrace keeps a channel's subscription (and its ring) this long
	// after its last member left, so a client that rejoins at once
	// (reconnect, page reload) resumes from memory (default 2 s).
	LeaveGrace time.Duration
	// SubscribeTimeout bounds the broker subscription of a first join
	// (default 5 s).
	SubscribeTimeout time.Duration
	// RingSize is how many recent messages a persistent channel keeps for
	// resumes (default 1024). RingBytes bounds one channel's ring (default
	// 1 MiB) and RingBudget all rings of the hub (default 64 MiB): a
	// channel keeps at most min(RingBytes, RingBudget / persistent
	// channels), so the more channels, the shorter each ring, and always
	// its latest message. A message costs its payload three times (the
	// message, its frame, the frame's WebSocket encoding) plus
	// entryOverhead; see docs/limits.md.
	RingSize   int
	RingBytes  int
	RingBudget int64
	// ReplayPage is the number of messages sent per replay step
	// (default 256); between steps the replay waits until the member's
	// connection has less than ReplayBacklog bytes queued (default 64 KiB).
	ReplayPage    int
	ReplayBacklog int
	// ReplayTimeout bounds one member's whole replay (default 60 s).
	ReplayTimeout time.Duration
	// Compression, when set, gives a topic's compression class; the
	// messages the hub frames carry it (see transport.Compression).
	Compression func(topic string) *transport.Compression
	Logger      *slog.Logger
}

// JoinResult is what a join learned; the session turns it into the reply.
type JoinResult struct {
	Persistent bool
	// Head is the channel's position when the member was attached.
	Head broker.Position
	// Resumed is true when the member asked to resume; then Recovered
	// tells whether it gets exactly what it missed, or Reason why not.
	Resumed   bool
	Recovered bool
	Reason    string
}

// Member is one channel instance of one connection.
type Member struct {
	Conn    transport.Conn
	Version phoenix.Version
	// TextOnly members (LongPoll: the client JSON-parses every message)
	// get binary payloads as {"base64": …} in a text frame, like v1.
	TextOnly bool
	// Key identifies the instance (the session's channel pointer); the
	// same key must be used to leave. When it implements Listener, it
	// hears about the member's join and reset.
	Key any
	// Resume asks to continue after this position (persistent topics).
	Resume *broker.Position
}

// member is how a channel keeps a Member: without the resume position,
// which only attaching needs (48 bytes per member of every channel).
type member struct {
	Conn transport.Conn
	Key  any
	// skipTo: live messages up to this offset already reached the member
	// through its replay (a page can run ahead of the live feed).
	skipTo   uint64
	Version  phoenix.Version
	TextOnly bool
}

// Listener is implemented by member keys that want to know their fate. A
// method pair on the key costs a member nothing, where two closures would
// cost every joined channel of every connection about 70 bytes.
type Listener interface {
	// Joined is called once, under the channel lock, before any message
	// reaches the member: the session sends its join reply from it, so
	// the reply precedes the replay. It runs under the hub's shard and
	// channel locks, often on an epoll loop: it must never wait on the
	// bus (or on a lock held across network I/O, as nats.go's is while it
	// redials), or every join and fan-out behind those locks stalls.
	Joined(JoinResult)
	// Reset is called when the member was dropped because the channel's
	// history can no longer continue what it received (stream recreated,
	// messages lost mid-replay); the client must rejoin with its offset.
	Reset()
}

// Hub is the registry.
type Hub struct {
	cfg    Config
	hist   broker.History // nil when the broker keeps no history
	seed   maphash.Seed
	shards [shards]shard

	channels     atomic.Int64
	persistent   atomic.Int64 // channels with a ring
	ringBytes    atomic.Int64 // what every ring holds (entry costs)
	sweeping     atomic.Bool  // a sweep trims every ring to its share
	swept        atomic.Int64 // ringBytes when the last sweep began
	received     atomic.Uint64
	delivered    atomic.Uint64
	replayed     atomic.Uint64
	encodeErrors atomic.Uint64
	resumes      [len(resumeReasons)]atomic.Uint64
	fanout       latency
}

type shard struct {
	mu     sync.Mutex
	topics map[string]*channel
}

type channel struct {
	h          *Hub
	topic      string
	persistent bool
	ready      chan struct{} // closed once the subscription is settled
	err        error         // set before ready is closed
	sub        broker.Subscription
	joining    int         // joins in progress; guarded by the shard lock
	grace      *time.Timer // pending drop; guarded by the shard lock

	mu      sync.Mutex
	members []member
	index   map[any]int
	epoch   string
	last    uint64 // offset of the last message (or the start position)
	ring    ring

	// fetching admits one replay fetch at a time (never held with mu):
	// a reconnect wave's resumes wait for the first one's page, which
	// backfill keeps in the ring, instead of all reading the stream at
	// once (10,000 clients of 100 channels: 10,000 fetches, which ran
	// past the join timeout, against 100).
	fetching sync.Mutex
}

// New returns a Hub.
func New(cfg Config) *Hub {
	if cfg.LeaveGrace <= 0 {
		cfg.LeaveGrace = 2 * time.Second
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.RingSize <= 0 {
		cfg.RingSize = 1024
	}
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if cfg.RingBudget <= 0 {
		cfg.RingBudget = DefaultRingBudget
	}
	if cfg.ReplayPage <= 0 {
		cfg.ReplayPage = 256
	}
	if cfg.ReplayBacklog <= 0 {
		cfg.ReplayBacklog = 64 << 10
	}
	if cfg.ReplayTimeout <= 0 {
		cfg.ReplayTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed()}
	h.hist, _ = cfg.Broker.(broker.History)
	for i := range h.shards {
		h.shards[i].topics = make(map[string]*channel)
	}
	return h
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
// and nothing has to be fetched, and reports whether it did. Most joins
// take this path; the first join of a topic on this gateway, and resumes
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
	ok := ch.attachNow(m)
	ch.mu.Unlock()
	if ok {
		ch.stopGrace()
	}
	return ok
}

// Join attaches m to topic, subscribing on the broker if this is the
// topic's first member here and replaying what m missed. It blocks, so
// callers run it off the event loop. On error m is not attached and
// Joined was not called.
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
	sh.mu.Unlock()
	defer h.doneJoining(ch)

	select {
	case <-ch.ready:
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
		for _, ch := range sh.topics {
			chs = append(chs, ch)
			ch.stopGrace()
		}
		clear(sh.topics)
		sh.mu.Unlock()
		for _, ch := range chs {
			h.forgetChannel(ch)
			<-ch.ready
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

// ringLimit is what one channel's ring may hold now: its share of the
// hub's budget, at most RingBytes.
func (h *Hub) ringLimit() int {
	n := max(h.persistent.Load(), 1)
	return int(min(int64(h.cfg.RingBytes), h.cfg.RingBudget/n))
}

// checkBudget starts a sweep when the rings together hold more than the
// budget and grew by an eighth of it since the last sweep began (so sweeps
// stay rare, and never spin when every ring is down to its latest
// message): a channel trims its own ring to its share at every push, but
// a ring filled while there were fewer channels keeps its larger share
// until someone trims it.
func (h *Hub) checkBudget() {
	b, total := h.cfg.RingBudget, h.ringBytes.Load()
	if total <= b+b/8 || total <= h.swept.Load()+b/8 || !h.sweeping.CompareAndSwap(false, true) {
		return
	}
	h.swept.Store(total)
	go h.sweep()
}

// sweep trims every ring to the current share (one at a time, each under
// its channel's lock, none under a shard lock).
func (h *Hub) sweep() {
	defer h.checkBudget() // what grew while we swept
	defer h.sweeping.Store(false)
	var chs []*channel
	for i := range h.shards {
		sh := &h.shards[i]
		chs = chs[:0]
		sh.mu.Lock()
		for _, ch := range sh.topics {
			if ch.persistent {
				chs = append(chs, ch)
			}
		}
		sh.mu.Unlock()
		limit := h.ringLimit()
		for _, ch := range chs {
			ch.mu.Lock()
			ch.ring.trim(limit)
			ch.mu.Unlock()
		}
	}
}

// Stats is a snapshot of hub counters.
type Stats struct {
	Channels int // topics with a subscription on this gateway
	// RingBytes is what the persistent channels' rings of recent messages
	// hold, in entry costs (see Config.RingBudget).
	RingBytes int64
	// Received counts live messages the broker handed to the hub for
	// fan-out: one per message per channel, whether or not the channel
	// had members at that moment (one in its leave grace has none), and
	// before the hub's own never-twice check.
	Received     uint64
	Delivered    uint64 // live messages handed to connections (one per member and message)
	Replayed     uint64 // missed messages sent to resuming members
	EncodeErrors uint64 // messages that could not be framed (e.g. a binary event over 255 bytes)
	// Resumes counts resume outcomes (joins with a position) by reason:
	// "" for recovered, else broker.ReasonEpochChanged, ReasonHistoryGone,
	// ReasonOffsetAhead, ReasonHistoryCleared, or "other" for a reason a broker made up. Every
	// key is present. A resume that failed before it had an outcome (the
	// subscription or the first fetch failed) is not counted here.
	Resumes map[string]uint64
	// Fanout is the fan-out latency histogram (see FanoutBuckets).
	Fanout Latency
}

// Stats returns a snapshot.
func (h *Hub) Stats() Stats {
	st := Stats{Channels: int(h.channels.Load()), RingBytes: h.ringBytes.Load(), Received: h.received.Load(), Delivered: h.delivered.Load(),
		Replayed: h.replayed.Load(), EncodeErrors: h.encodeErrors.Load(),
		Resumes: make(map[string]uint64, len(resumeReasons)), Fanout: h.fanout.snapshot()}
	for i, r := range resumeReasons {
		st.Resumes[r] = h.resumes[i].Load()
	}
	return st
}

// resumeReasons indexes Hub.resumes; "" is recovered.
var resumeReasons = [...]string{"", broker.ReasonEpochChanged, broker.ReasonHistoryGone, broker.ReasonOffsetAhead, broker.ReasonHistoryCleared, "other"}

// countResume records the outcome of a resume once the hub decided it.
func (h *Hub) countResume(r JoinResult) {
	if !r.Resumed {
		return
	}
	i := len(resumeReasons) - 1 // "other"
	if r.Recovered {
		i = 0
	} else {
		for j, reason := range resumeReasons[1 : len(resumeReasons)-1] {
			if r.Reason == reason {
				i = j + 1
			}
		}
	}
	h.resumes[i].Add(1)
}

// FanoutBuckets are the upper bounds of the fan-out latency histogram,
// 1 ms to 10 s; slower messages land in a last, unbounded bucket.
var FanoutBuckets = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Latency is a snapshot of the fan-out latency histogram: for every live
// message that carried its publish time (broker.Message.Published) and
// had at least one local member, the time from publishing until the hub
// had handed its frames to every member's transport.Conn.Send (for
// WebSocket, written to the socket or queued on the connection; for
// LongPoll, buffered for the next poll). One observation per message per
// gateway, taken after the fan-out loop. The publish time comes from
// another clock (the publisher's or the NATS server's), so skew between
// hosts shifts it; a negative difference counts as 0.
type Latency struct {
	// Counts[i] is the number of observations in (FanoutBuckets[i-1],
	// FanoutBuckets[i]]; the last element counts those over the last
	// bound. Not cumulative.
	Counts [len(FanoutBuckets) + 1]uint64
	Sum    time.Duration // of every observation, in microsecond steps
}

// Count is the number of observations.
func (l Latency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// latency is the live histogram: one atomic counter per bucket and the sum
// in microseconds (a uint64 of nanoseconds would wrap after about three
// weeks of 1 M messages/s at 10 ms each). Observing allocates nothing.
type latency struct {
	counts [len(FanoutBuckets) + 1]atomic.Uint64
	sumUS  atomic.Uint64
}

func (l *latency) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(FanoutBuckets) && d > FanoutBuckets[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sumUS.Add(uint64(d / time.Microsecond))
}

func (l *latency) snapshot() Latency {
	var s Latency
	for i := range l.counts {
		s.Counts[i] = l.counts[i].Load()
	}
	s.Sum = time.Duration(l.sumUS.Load()) * time.Microsecond
	return s
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
// map: below it a scan is as fast, and a map costs 200+ bytes even for a
// channel of one (a user's private channel).
const indexFrom = 16

// add and remove run under ch.mu.
func (ch *channel) add(m Member, skipTo uint64) {
	if ch.find(m.Key) >= 0 {
		return
	}
	ch.members = append(ch.members, member{Conn: m.Conn, Key: m.Key, skipTo: skipTo, Version: m.Version, TextOnly: m.TextOnly})
	if ch.index != nil {
		ch.index[m.Key] = len(ch.members) - 1
	} else if len(ch.members) >= indexFrom {
		ch.index = make(map[any]int, 2*len(ch.members))
		for i, m := range ch.members {
			ch.index[m.Key] = i
		}
	}
}

// find returns key's slot, or -1.
func (ch *channel) find(key any) int {
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
		if ch.index != nil {
			ch.index[ch.members[i].Key] = i
		}
	}
	ch.members[last] = member{}
	ch.members = ch.members[:last]
	if ch.index != nil {
		delete(ch.index, key)
	}
	return true
}

func (ch *channel) pos() broker.Position { return broker.Position{Epoch: ch.epoch, Offset: ch.last} }

// joined reports the join's result to its member, and counts a resume's
// outcome: every path that attaches a member goes through here once.
func (ch *channel) joined(m Member, r JoinResult) {
	ch.h.countResume(r)
	if l, ok := m.Key.(Listener); ok {
		l.Joined(r)
	}
}

// attachNow attaches m if nothing has to be fetched (ch.mu held).
func (ch *channel) attachNow(m Member) bool {
	if !ch.persistent {
		ch.joined(m, JoinResult{})
		ch.add(m, 0)
		return true
	}
	res := JoinResult{Persistent: true, Head: ch.pos()}
	if m.Resume == nil {
		ch.joined(m, res)
		ch.add(m, 0)
		return true
	}
	res.Resumed = true
	r := *m.Resume
	switch {
	case r.Epoch != ch.epoch:
		res.Reason = broker.ReasonEpochChanged
	case r.Offset == ch.last:
		res.Recovered = true
	case r.Offset < ch.last && ch.ring.covers(r.Offset) && ch.ring.countAfter(r.Offset) <= ch.h.cfg.ReplayPage:
		res.Recovered = true
		ch.joined(m, res)
		ch.sendRing(m, r.Offset, ch.h.cfg.ReplayPage)
		ch.add(m, 0)
		return true
	default:
		return false // the broker must check or supply it
	}
	ch.joined(m, res)
	ch.add(m, 0)
	return true
}

var errMemberGone = errors.New("hub: member's connection closed during replay")

// attach replays what m missed, in steps, then attaches it.
func (ch *channel) attach(ctx context.Context, m Member) error {
	ch.mu.Lock()
	if ch.attachNow(m) {
		ch.mu.Unlock()
		return nil
	}
	ch.mu.Unlock()
	cfg := &ch.h.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ReplayTimeout)
	defer cancel()
	from := *m.Resume
	replied := false
	idle := 0
	for {
		ch.mu.Lock()
		if replied && (from.Offset >= ch.last || ch.ring.covers(from.Offset)) {
			// The ring holds everything after from: finish from memory,
			// in steps, and attach under the same lock as the last step.
			last, ok := ch.sendRing(m, from.Offset, cfg.ReplayPage)
			if !ok {
				ch.mu.Unlock()
				return errMemberGone
			}
			if last == 0 || last >= ch.last {
				var skipTo uint64
				if from.Offset > ch.last {
					// The stream was ahead of this gateway's live feed:
					// the messages between arrive live later, and m has
					// them already.
					skipTo = from.Offset
				}
				ch.add(m, skipTo)
				ch.mu.Unlock()
				return nil
			}
			from.Offset = last
			ch.mu.Unlock()
			if err := waitBacklog(ctx, m.Conn, cfg.ReplayBacklog); err != nil {
				return ch.abandon(m, replied, err)
			}
			continue
		}
		ch.mu.Unlock()

		ch.fetching.Lock()
		ch.mu.Lock()
		if !replied && ch.attachNow(m) {
			// The fetch we waited for put what m missed in the ring.
			ch.mu.Unlock()
			ch.fetching.Unlock()
			return nil
		}
		if replied && (from.Offset >= ch.last || ch.ring.covers(from.Offset)) {
			ch.mu.Unlock()
			ch.fetching.Unlock()
			continue // finish from the ring
		}
		ch.mu.Unlock()
		page, err := ch.h.hist.Replay(ctx, ch.topic, from, cfg.ReplayPage)
		if err != nil {
			ch.fetching.Unlock()
			return ch.abandon(m, replied, err)
		}
		ch.mu.Lock()
		ch.fetching.Unlock() // mu is held until backfill: followers see the page in the ring
		if page.Reason != "" {
			if replied {
				// Lost mid-replay (retention overtook us): never a
				// silent gap. The client rejoins and learns why.
				ch.mu.Unlock()
				return ch.abandon(m, true, errors.New(page.Reason))
			}
			ch.joined(m, JoinResult{Persistent: true, Head: ch.pos(), Resumed: true, Reason: page.Reason})
			ch.add(m, 0)
			ch.mu.Unlock()
			return nil
		}
		if !replied {
			ch.joined(m, JoinResult{Persistent: true, Head: ch.pos(), Resumed: true, Recovered: true})
			replied = true
		}
		entries := make([]*entry, len(page.Messages))
		for i, msg := range page.Messages {
			entries[i] = &entry{msg: msg}
			if !ch.sendEntry(m, entries[i]) {
				ch.mu.Unlock()
				return errMemberGone
			}
			from.Offset = msg.Offset
		}
		// Keep what was fetched when it joins up with the ring, so the
		// next clients resuming from similar offsets (a reconnect wave
		// after a gateway restart) are served from memory, and the
		// encodings are shared.
		ch.ring.backfill(entries, ch.last, cfg.RingSize, ch.h.ringLimit())
		ch.h.replayed.Add(uint64(len(page.Messages)))
		caughtUp := from.Offset >= ch.last || ch.ring.covers(from.Offset)
		ch.mu.Unlock()
		ch.h.checkBudget()
		if len(page.Messages) == 0 && !caughtUp {
			// The stream has nothing newer than from, yet the live feed
			// is ahead of it: a lagging replica. Retry briefly.
			if idle++; idle > 100 {
				return ch.abandon(m, true, errors.New("replay cannot reach the live position"))
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err := waitBacklog(ctx, m.Conn, cfg.ReplayBacklog); err != nil {
			return ch.abandon(m, replied, err)
		}
	}
}

// abandon ends a replay that cannot finish. Before the join reply it is a
// plain join error; after it the member is reset so the client rejoins
// with its latest offset rather than silently missing messages.
func (ch *channel) abandon(m Member, replied bool, err error) error {
	if !replied || errors.Is(err, errMemberGone) {
		return err
	}
	ch.h.cfg.Logger.Warn("hub: replay abandoned; member reset", "topic", ch.topic, "err", err)
	if l, ok := m.Key.(Listener); ok {
		l.Reset()
	}
	return nil
}

func waitBacklog(ctx context.Context, c transport.Conn, limit int) error {
	for c.Backlog() > limit {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// sendRing sends up to max ring entries after offset to m (ch.mu held) and
// returns the last offset sent (0 if none).
func (ch *channel) sendRing(m Member, after uint64, max int) (last uint64, ok bool) {
	n := 0
	for e := range ch.ring.after(after) {
		if n == max {
			break
		}
		if !ch.sendEntry(m, e) {
			return last, false
		}
		last = e.msg.Offset
		n++
	}
	ch.h.replayed.Add(uint64(n))
	return last, true
}

func (ch *channel) sendEntry(m Member, e *entry) bool {
	for _, out := range e.enc.frames(ch.h, e.msg, m.Version, m.TextOnly) {
		if out != nil && !m.Conn.Send(out) {
			return false
		}
	}
	return true
}

// deliver is the subscription handler: one live message for every member.
func (ch *channel) deliver(msg *broker.Message) {
	if msg.Reset {
		ch.reset(msg)
		return
	}
	ch.h.received.Add(1)
	e := &entry{msg: msg}
	n := 0
	ch.mu.Lock()
	if ch.persistent {
		if msg.Offset <= ch.last && ch.ring.len() > 0 {
			ch.mu.Unlock()
			return // never twice
		}
		ch.ring.push(e, ch.h.cfg.RingSize, ch.h.ringLimit())
		ch.last = msg.Offset
	}
	members := len(ch.members)
	for _, m := range ch.members {
		if m.skipTo >= msg.Offset && ch.persistent {
			continue // sent during its replay: never twice
		}
		for _, out := range e.enc.frames(ch.h, msg, m.Version, m.TextOnly) {
			if out != nil && m.Conn.Send(out) {
				n++
			}
		}
	}
	ch.mu.Unlock()
	ch.h.delivered.Add(uint64(n))
	if ch.persistent {
		ch.h.checkBudget()
	}
	// Once per message, after every member has it: a message nobody here
	// receives has no fan-out to measure.
	if members > 0 && !msg.Published.IsZero() {
		ch.h.fanout.observe(time.Since(msg.Published))
	}
}

// reset drops every member of a channel whose history was reset.
func (ch *channel) reset(msg *broker.Message) {
	ch.mu.Lock()
	ch.epoch, ch.last = msg.Epoch, msg.Offset
	ch.ring.clear()
	members := ch.members
	ch.members = nil
	ch.index = nil
	ch.mu.Unlock()
	for _, m := range members {
		if l, ok := m.Key.(Listener); ok {
			l.Reset()
		}
	}
	sh := ch.h.shard(ch.topic)
	sh.mu.Lock()
	if ch.joining == 0 && ch.len() == 0 && sh.topics[ch.topic] == ch {
		ch.startGrace()
	}
	sh.mu.Unlock()
}

// --- ring of recent messages ---

// entry is one message with its encodings, shared by live fan-out and
// every replay that reads it from the ring.
type entry struct {
	msg *broker.Message
	enc encoder
}

// ring is a bounded FIFO of a persistent channel's latest messages
// (ch.mu held for every method).
type ring struct {
	buf   []*entry
	head  int // index of the oldest
	n     int
	bytes int           // sum of the entries' costs
	total *atomic.Int64 // the hub's sum over every ring (nil in tests)
}

// entryOverhead is what an entry costs besides its payload and frame:
// the entry and its encoder, the broker.Message, the frame's
// transport.Message, the ring slot.
const entryOverhead = 256

// cost is what keeping e in a ring costs: the payload three times (as
// received, in the Phoenix frame, and in that frame's cached WebSocket
// encoding; a second protocol version in use adds two more copies, not
// counted), plus the structures around them. Measured: a heap profile of
// rings full of 32 KB messages has the three copies.
func cost(e *entry) int {
	return 3*len(e.msg.Payload) + len(e.msg.Event) + entryOverhead
}

func (r *ring) add(n int) {
	r.bytes += n
	if r.total != nil {
		r.total.Add(int64(n))
	}
}

// clear drops every entry.
func (r *ring) clear() {
	r.add(-r.bytes)
	r.buf, r.head, r.n = nil, 0, 0
}

func (r *ring) len() int { return r.n }

func (r *ring) at(i int) *entry { return r.buf[(r.head+i)%len(r.buf)] }

// push appends e, evicting the oldest entries until at most max remain
// and their costs fit maxBytes; e itself is always kept.
func (r *ring) push(e *entry, max, maxBytes int) {
	if r.buf == nil {
		r.buf = make([]*entry, min(max, 64))
	}
	if r.n == len(r.buf) && len(r.buf) < max {
		nb := make([]*entry, min(max, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	c := cost(e)
	for r.n > 0 && (r.n == len(r.buf) || r.bytes+c > maxBytes) {
		old := r.at(0)
		r.add(-cost(old))
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
	r.add(c)
}

// trim evicts the oldest entries until the rest fit maxBytes, keeping
// the latest.
func (r *ring) trim(maxBytes int) {
	for r.n > 1 && r.bytes > maxBytes {
		old := r.at(0)
		r.add(-cost(old))
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
}

// backfill prepends fetched entries (chained, oldest first) that connect
// to the ring's oldest entry — or, for an empty ring, that end at the
// channel's last offset — as far as the ring has room; it never evicts
// newer entries for older ones.
func (r *ring) backfill(es []*entry, last uint64, max, maxBytes int) {
	if len(es) == 0 {
		return
	}
	newest := es[len(es)-1].msg.Offset
	if r.n == 0 {
		if newest != last {
			return
		}
	} else if newest < r.at(0).msg.Prev {
		return // a hole between the page and the ring
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if r.n > 0 && e.msg.Offset >= r.at(0).msg.Offset {
			continue // already in the ring
		}
		if r.n >= max || r.bytes+cost(e) > maxBytes {
			return
		}
		r.pushFront(e, max)
	}
}

func (r *ring) pushFront(e *entry, max int) {
	if r.buf == nil {
		r.buf = make([]*entry, min(max, 64))
	}
	if r.n == len(r.buf) {
		nb := make([]*entry, min(max, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = e
	r.n++
	r.add(cost(e))
}

// covers reports whether every message after offset x is in the ring: the
// oldest entry's Prev is at or before x (messages are chained by Prev).
func (r *ring) covers(x uint64) bool { return r.n > 0 && x >= r.at(0).msg.Prev }

func (r *ring) countAfter(x uint64) int {
	c := 0
	for i := r.n - 1; i >= 0 && r.at(i).msg.Offset > x; i-- {
		c++
	}
	return c
}

// after yields the entries with Offset > x, oldest first.
func (r *ring) after(x uint64) func(func(*entry) bool) {
	return func(yield func(*entry) bool) {
		start := r.n - r.countAfter(x)
		for i := start; i < r.n; i++ {
			if !yield(r.at(i)) {
				return
			}
		}
	}
}

// --- encoding ---

// encoder caches the encodings of one message, built lazily at most once
// per protocol variant; the same *transport.Message (so the same framed
// bytes) goes to every member of that variant. Used under ch.mu.
type encoder struct {
	v1, v2, v2t         [2]*transport.Message
	done1, done2, done3 bool
}

// EventOffset is the text frame that follows a binary broadcast in a
// persistent namespace, [null, "<offset>", topic, "fabric:offset",
// {"offset": "<offset>"}]: a binary frame has no ref slot.
const EventOffset = "fabric:offset"

// offsetPayload is fabric:offset's payload, {"offset":"<offset>"}.
func offsetPayload(offset string) []byte {
	b := make([]byte, 0, len(offset)+14)
	b = append(b, `{"offset":"`...)
	b = append(b, offset...)
	return append(b, `"}`...)
}

// ref is the frame's ref slot: the stream offset in a persistent namespace
// (phoenix.js hands it to channel.on handlers as the second argument).
func ref(m *broker.Message) phoenix.Ref {
	if m.Offset == 0 {
		return phoenix.Null
	}
	return phoenix.R(strconv.FormatUint(m.Offset, 10))
}

// classed sets m's compression class, once, before m is shared.
func (h *Hub) classed(m *transport.Message, topic string) *transport.Message {
	if h.cfg.Compression != nil {
		m.Compression = h.cfg.Compression(topic)
	}
	return m
}

func (e *encoder) frames(h *Hub, m *broker.Message, v phoenix.Version, textOnly bool) []*transport.Message {
	if textOnly && v == phoenix.V2 && m.Binary {
		if !e.done3 {
			e.done3 = true
			e.v2t[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, ref(m), m.Topic, m.Event, phoenix.AppendBase64Payload(nil, m.Payload))), m.Topic)
		}
		return e.v2t[:]
	}
	if v == phoenix.V1 {
		if !e.done1 {
			e.done1 = true
			payload := m.Payload
			if m.Binary {
				// v1 has no binary frames: the payload travels as base64.
				payload = phoenix.AppendBase64Payload(nil, m.Payload)
			}
			e.v1[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, ref(m), m.Topic, m.Event, payload)), m.Topic)
		}
		return e.v1[:]
	}
	if !e.done2 {
		e.done2 = true
		if !m.Binary {
			e.v2[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, ref(m), m.Topic, m.Event, m.Payload)), m.Topic)
		} else if b, err := phoenix.AppendBinaryBroadcast(nil, m.Topic, m.Event, m.Payload); err != nil {
			h.encodeErrors.Add(1)
			h.cfg.Logger.Warn("hub: cannot frame binary message", "topic", m.Topic, "err", err)
		} else {
			e.v2[0] = h.classed(transport.NewBinary(b), m.Topic)
			if m.Offset != 0 {
				// A binary broadcast has no ref slot; its offset follows
				// in a text frame the JS helper consumes. The payload is
				// an object, never null: phoenix.js with a logger reads
				// payload.status of every message.
				r := ref(m)
				e.v2[1] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, r, m.Topic, EventOffset, offsetPayload(r.S))), m.Topic)
			}
		}
	}
	return e.v2[:]
}
