package presence

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

// Phoenix Presence event names, and Fabric's count event.
const (
	EventState = "presence_state"
	EventDiff  = "presence_diff"
	// EventCount is Fabric's own: in a channel over its member cap,
	// members get an empty presence_state and then this event with the
	// channel's size, {"count": keys, "metas": metas}, instead of the
	// member list (see Config.MaxMembers).
	EventCount = "fabric:presence_count"
)

// Budget defaults (docs/presence.md explains each and what it bounds).
const (
	DefaultMaxMembers     = 1000
	DefaultMaxStateBytes  = 128 << 10
	DefaultMaxMetaBytes   = 1 << 10
	DefaultCountInterval  = time.Second
	DefaultRejoinBurst    = 2
	DefaultRejoinInterval = 5 * time.Second
)

// Bus message kinds (the "t" field).
const (
	kindDiff  = "diff"  // local joins/leaves since the previous diff (seq+1)
	kindHB    = "hb"    // heartbeat: still here, my latest seq
	kindState = "state" // full local state as of seq (answer to a sync)
	kindSync  = "sync"  // request: send me your state (to: one gateway, or all)
	kindBye   = "bye"   // this gateway stops serving the channel
)

// Config configures a Tracker.
type Config struct {
	Bus broker.Presence
	// Namespaces says which namespaces track presence, and how (nil:
	// none).
	Namespaces *namespace.Set
	// Flush is the batching interval of diffs, towards clients and the bus
	// alike (default 50 ms).
	Flush time.Duration
	// SyncWindow is how long a gateway that starts serving a channel
	// collects the other gateways' states before its first members get
	// presence_state (default 200 ms).
	SyncWindow time.Duration
	// Grace keeps a channel's presence (and its bus subscription) this
	// long after its last local member left (default 2 s).
	Grace time.Duration
	// MaxMetaBytes bounds the app meta taken from join params, measured
	// as it is sent (re-encoded, without HTML escaping); a bigger one is
	// dropped (default 1 KiB).
	MaxMetaBytes int
	// MaxMembers and MaxStateBytes cap what a channel's members are sent:
	// once a channel has more metas than MaxMembers, cluster-wide, or its
	// presence_state would be bigger than MaxStateBytes, its members get
	// an empty presence_state and then EventCount (at most every
	// CountInterval) instead of the list and its diffs; below 90 % of both
	// they get the full state again. Defaults 1000 metas, 128 KiB (the
	// gateway passes half the per-connection output budget, so a state
	// always fits in it), 1 s. A namespace may set its own member cap and
	// a lower byte cap (PresenceOptions).
	MaxMembers    int
	MaxStateBytes int
	CountInterval time.Duration
	// RejoinBurst and RejoinInterval limit re-joins of one topic by one
	// connection (a re-join costs a presence_state to the joiner and a
	// leave and a join to every member): a token bucket of RejoinBurst
	// joins, the first join included, refilled one per RejoinInterval
	// (defaults 2, 5 s). See AdmitJoin.
	RejoinBurst    int
	RejoinInterval time.Duration
	// GatewayID names this gateway on the bus (default: random, so unique
	// per process).
	GatewayID string
	Logger    *slog.Logger

	manual bool             // tests: no background loop
	now    func() time.Time // tests: clock
}

// Member is one channel instance to track.
type Member struct {
	Conn    transport.Conn
	Version phoenix.Version
	JoinRef phoenix.Ref
	// Sub is the authenticated user; when set it is the presence key.
	Sub string
	// ConnID is the key of last resort (anonymous, no key param).
	ConnID string
	// Params are the join params (JSON object).
	Params []byte
}

// Tracker keeps the presence of every presence-enabled channel with local
// members. Safe for concurrent use; Track and Untrack never block on the
// network and may be called under the hub's locks (the Tracker never calls
// into the hub).
type Tracker struct {
	cfg      Config
	id       string
	selfMark []byte // `,"gw":"<id>",` as encode writes it
	refs     atomic.Uint64

	mu    sync.Mutex
	chans map[string]*chanState
	dirty []*chanState
	// recent holds the re-join budgets of connections that left a topic
	// lately; kept apart from the channels, which may be dropped when
	// their members all flap out.
	recent map[rejoinKey]*rejoin

	// bg counts the goroutines that subscribe and sync (start, request):
	// Close cancels ctx and waits for them, so none of them touches the
	// bus after it. They are started with t.mu held and not once closing
	// is set, so no start races Close's wait.
	bg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	closing bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type meta struct {
	key string
	ref string
	raw json.RawMessage // the whole meta object, phx_ref included
}

type local struct {
	meta
	conn      transport.Conn
	v         phoenix.Version
	joinRef   phoenix.Ref
	needState bool // presence_state not sent yet: gets no diff before it
	gone      bool // untracked while waiting in chanState.fresh
}

type rejoinKey struct {
	topic string
	conn  transport.Conn
}

// rejoin is a connection's re-join budget for one topic (a token bucket).
type rejoin struct {
	tokens float64
	last   time.Time
}

type remoteGW struct {
	members  map[string]meta // by phx_ref
	seq      uint64          // latest diff seq applied
	synced   bool            // members came from a state (then diffs)
	log      []*wire         // diffs applied while not synced
	lastSeen time.Time
	ttl      time.Duration
	asked    time.Time // last directed sync request
}

// diff accumulates joins and leaves by key, in the Phoenix shape.
type diff struct {
	joins, leaves map[string][]json.RawMessage
}

func (d *diff) add(joins bool, m meta) {
	p := &d.leaves
	if joins {
		p = &d.joins
	}
	if *p == nil {
		*p = make(map[string][]json.RawMessage)
	}
	(*p)[m.key] = append((*p)[m.key], m.raw)
}

func (d *diff) empty() bool { return len(d.joins) == 0 && len(d.leaves) == 0 }

type chanState struct {
	topic string
	opts  namespace.Presence

	local  map[any]*local
	remote map[string]*remoteGW

	out   diff   // towards local clients (every change)
	bus   diff   // towards other gateways (local changes only)
	seq   uint64 // last diff published
	dirty bool
	// cache is the encoded state followed by "]", nil when stale; tail
	// is the v2 presence_state Tail sharing it (see flush).
	cache []byte
	tail  *transport.Message
	fresh []*local // tracked since the last flush: waiting for their state

	// Size, local and remote, kept as members change (O(1) each).
	metas   int
	bytes   int            // the state's encoded size (approximate from above)
	keys    map[string]int // while capped, metas per key: len is what Presence.list() would hold
	capped  bool           // over the caps: counts instead of the list
	counted [2]int         // keys and metas last sent in EventCount
	countAt time.Time      // when

	sub         broker.Subscription
	subscribing bool
	syncing     bool // initial sync: states are held back
	lastTry     time.Time
	nextHB      time.Time
	emptySince  time.Time
}

// New returns a Tracker and starts its flush loop.
func New(cfg Config) *Tracker {
	if cfg.Flush <= 0 {
		cfg.Flush = 50 * time.Millisecond
	}
	if cfg.SyncWindow <= 0 {
		cfg.SyncWindow = 200 * time.Millisecond
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 2 * time.Second
	}
	if cfg.MaxMetaBytes <= 0 {
		cfg.MaxMetaBytes = DefaultMaxMetaBytes
	}
	if cfg.MaxMembers <= 0 {
		cfg.MaxMembers = DefaultMaxMembers
	}
	if cfg.MaxStateBytes <= 0 {
		cfg.MaxStateBytes = DefaultMaxStateBytes
	}
	if cfg.CountInterval <= 0 {
		cfg.CountInterval = DefaultCountInterval
	}
	if cfg.RejoinBurst <= 0 {
		cfg.RejoinBurst = DefaultRejoinBurst
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.GatewayID == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.GatewayID = hex.EncodeToString(b[:])
	}
	t := &Tracker{cfg: cfg, id: cfg.GatewayID, chans: map[string]*chanState{},
		selfMark: []byte(`,"gw":` + string(encodeJSON(cfg.GatewayID)) + `,`),
		stop:     make(chan struct{}), done: make(chan struct{})}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if cfg.manual {
		close(t.done)
	} else {
		go t.loop()
	}
	return t
}

// ID is this gateway's presence id.
func (t *Tracker) ID() string { return t.id }

// Enabled reports whether topic's namespace tracks presence.
func (t *Tracker) Enabled(topic string) bool {
	_, ok := t.cfg.Namespaces.Presence(topic)
	return ok
}

// Track adds a channel instance (inst identifies it for Untrack). Its
// presence_state goes out with the next flush (within Flush), or once the
// channel's initial sync with the other gateways is over; members joining
// in the same interval share one encoding of it. Call it after the join
// reply went out. It does no O(members) work, so it is cheap under the
// hub's lock.
func (t *Tracker) Track(topic string, inst any, m Member) bool {
	opts, ok := t.cfg.Namespaces.Presence(topic)
	if !ok {
		return false
	}
	now := t.cfg.now()
	l := &local{conn: m.Conn, v: m.Version, joinRef: m.JoinRef, needState: true}
	l.key = presenceKey(m)
	l.ref = t.newRef()
	l.raw = buildMeta(l.ref, "", now, m.Params, opts.MetaKey, t.cfg.MaxMetaBytes)

	t.mu.Lock()
	ch := t.chans[topic]
	if ch == nil {
		ch = &chanState{topic: topic, opts: opts, local: map[any]*local{}, remote: map[string]*remoteGW{},
			syncing: true, subscribing: true, lastTry: now}
		ch.nextHB = now.Add(jitter(opts.TTL / 3))
		t.chans[topic] = ch
		t.background(func() { t.start(ch) })
	}
	if _, dup := ch.local[inst]; dup {
		t.mu.Unlock()
		return true
	}
	ch.local[inst] = l
	ch.fresh = append(ch.fresh, l)
	ch.emptySince = time.Time{}
	t.changed(ch, true, l.meta, true)
	t.mu.Unlock()
	return true
}

// AdmitJoin is asked before a connection joins topic. It returns 0 when
// the join may go ahead, or how long until it may: a connection that left
// topic lately re-joins at most RejoinBurst times at once and then once
// per RejoinInterval. The first join of a topic by a connection is always
// free; only presence namespaces are limited (that is where a re-join is
// amplified: a state to the joiner, a leave and a join to every member).
func (t *Tracker) AdmitJoin(topic string, conn transport.Conn) time.Duration {
	if !t.Enabled(topic) {
		return 0 // no lock taken for the joins of other namespaces
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.recent[rejoinKey{topic, conn}]
	if r == nil {
		return 0
	}
	now := t.cfg.now()
	r.refill(now, t.cfg.RejoinInterval, t.cfg.RejoinBurst)
	if r.tokens >= 1 {
		r.tokens--
		return 0
	}
	return max(time.Millisecond, time.Duration((1-r.tokens)*float64(t.cfg.RejoinInterval)))
}

func (r *rejoin) refill(now time.Time, every time.Duration, burst int) {
	r.tokens = min(float64(burst), r.tokens+float64(now.Sub(r.last))/float64(every))
	r.last = now
}

// Update replaces a tracked instance's app meta: a leave of the old meta
// and a join of the new one (with phx_ref_prev), as Phoenix does.
func (t *Tracker) Update(topic string, inst any, appMeta json.RawMessage) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.chans[topic]
	if ch == nil {
		return false
	}
	l := ch.local[inst]
	if l == nil {
		return false
	}
	old := l.meta
	params := encodeJSON(map[string]json.RawMessage{ch.opts.MetaKey: appMeta})
	l.ref = t.newRef()
	l.raw = buildMeta(l.ref, old.ref, t.cfg.now(), params, ch.opts.MetaKey, t.cfg.MaxMetaBytes)
	t.changed(ch, false, old, true)
	t.changed(ch, true, l.meta, true)
	return true
}

// Untrack removes a channel instance (idempotent).
func (t *Tracker) Untrack(topic string, inst any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.chans[topic]
	if ch == nil {
		return
	}
	l := ch.local[inst]
	if l == nil {
		return
	}
	delete(ch.local, inst)
	l.gone = true
	t.changed(ch, false, l.meta, true)
	now := t.cfg.now()
	if len(ch.local) == 0 {
		ch.emptySince = now
	}
	// Remember the leave for AdmitJoin: the join that ends here spent
	// one token. Entries go once refilled (housekeep), so the map holds
	// only the last RejoinInterval's leavers.
	k := rejoinKey{topic, l.conn}
	if t.recent == nil {
		t.recent = map[rejoinKey]*rejoin{}
	}
	if t.recent[k] == nil {
		t.recent[k] = &rejoin{tokens: float64(t.cfg.RejoinBurst - 1), last: now}
	}
}

// changed records a membership change (t.mu held): towards local clients
// always, towards the bus when it is a local member's.
func (t *Tracker) changed(ch *chanState, join bool, m meta, isLocal bool) {
	if !ch.capped {
		ch.out.add(join, m) // a capped channel's members get counts instead
	}
	if isLocal {
		ch.bus.add(join, m)
	}
	ch.account(join, m)
	ch.cache, ch.tail = nil, nil
	t.markDirty(ch)
}

// stateOverhead is what a meta adds to a state besides its own bytes and
// its key's: the quotes, `:{"metas":[`, `]}` and commas.
const stateOverhead = 18

// account keeps the channel's size as members change.
func (ch *chanState) account(join bool, m meta) {
	size := len(m.raw) + len(m.key) + stateOverhead
	if join {
		ch.metas++
		ch.bytes += size
		if ch.keys != nil {
			ch.keys[m.key]++
		}
		return
	}
	ch.metas--
	ch.bytes -= size
	if ch.keys == nil {
		return
	}
	if n := ch.keys[m.key] - 1; n > 0 {
		ch.keys[m.key] = n
	} else {
		delete(ch.keys, m.key)
	}
}

// over reports whether the channel is past its caps, with hysteresis: a
// capped channel stays capped until it is below 90 % of both.
func (t *Tracker) over(ch *chanState) bool {
	maxM, maxB := t.cfg.MaxMembers, t.cfg.MaxStateBytes
	if ch.opts.MaxMembers > 0 {
		maxM = ch.opts.MaxMembers
	}
	if ch.opts.MaxStateBytes > 0 {
		maxB = min(maxB, ch.opts.MaxStateBytes) // only lower: it must fit the connection budget
	}
	if ch.capped {
		return ch.metas*10 > maxM*9 || ch.bytes*10 > maxB*9
	}
	return ch.metas > maxM || ch.bytes > maxB
}

func (t *Tracker) markDirty(ch *chanState) {
	if !ch.dirty {
		ch.dirty = true
		t.dirty = append(t.dirty, ch)
	}
}

func (t *Tracker) newRef() string {
	// Unique across the fleet: the gateway id plus a counter.
	return "F" + t.id + strconv.FormatUint(t.refs.Add(1), 36)
}

// state is the channel's full presence in the Phoenix shape followed by
// "]" (the end of a v2 message: see flush), built once per change
// (t.mu held).
func (ch *chanState) state() []byte {
	if ch.cache != nil {
		return ch.cache
	}
	groups := make(map[string][]json.RawMessage, len(ch.local))
	for _, l := range ch.local {
		groups[l.key] = append(groups[l.key], l.raw)
	}
	for _, g := range ch.remote {
		for _, m := range g.members {
			groups[m.key] = append(groups[m.key], m.raw)
		}
	}
	ch.cache = append(appendGroups(make([]byte, 0, ch.bytes+3), groups), ']')
	return ch.cache
}

// localState is this gateway's part, for the bus (t.mu held).
func (ch *chanState) localState() map[string][]json.RawMessage {
	groups := make(map[string][]json.RawMessage, len(ch.local))
	for _, l := range ch.local {
		groups[l.key] = append(groups[l.key], l.raw)
	}
	return groups
}

// --- background work ---

func (t *Tracker) loop() {
	defer close(t.done)
	tick := time.NewTicker(t.cfg.Flush)
	defer tick.Stop()
	var lastHK time.Time
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.flush()
		if now := t.cfg.now(); now.Sub(lastHK) >= 250*time.Millisecond {
			lastHK = now
			t.housekeep(now)
		}
	}
}

type target struct {
	conn transport.Conn
	msg  *transport.Message
}

// flush sends the batched diffs: one presence_diff per dirty channel to its
// local members that have their state (encoded once per protocol version),
// presence_state to members that joined since and one diff message to the
// bus. Only the loop calls it (and Close, after the loop ended), so a
// member's state and diffs leave in order.
//
// A join wave costs one encoding of the state, not one per joiner: the
// state is encoded once per change of the channel and shared by
// reference (a v2 joiner's message is its own head — only the join_ref
// differs — plus the shared state as transport.Message.Tail; v1 messages
// carry no join_ref and are shared whole). Over the caps (Config.
// MaxMembers), joiners get an empty state and the count instead, so what
// a wave costs does not grow with the room.
func (t *Tracker) flush() {
	type pub struct {
		topic string
		msg   []byte
	}
	var targets []target
	var pubs []pub
	now := t.cfg.now()
	t.mu.Lock()
	for _, ch := range t.dirty {
		ch.dirty = false
		t.flushChannel(ch, now, &targets)
		if !ch.bus.empty() {
			ch.seq++
			pubs = append(pubs, pub{ch.topic, t.encode(&wire{T: kindDiff, Seq: ch.seq, TTL: ch.opts.TTL.Milliseconds(),
				Joins: groupsOf(ch.bus.joins), Leaves: groupsOf(ch.bus.leaves)})})
			ch.bus = diff{}
		}
	}
	t.dirty = t.dirty[:0]
	t.mu.Unlock()
	for _, tg := range targets {
		tg.conn.Send(tg.msg)
	}
	for _, p := range pubs {
		if err := t.cfg.Bus.PresencePublish(p.topic, p.msg); err != nil {
			t.cfg.Logger.Debug("presence: publish failed", "topic", p.topic, "err", err)
		}
	}
}

// flushChannel appends what ch's local members are to be sent (t.mu held).
func (t *Tracker) flushChannel(ch *chanState, now time.Time, targets *[]target) {
	if over := t.over(ch); over != ch.capped {
		// Crossing a cap either way: every member gets a new state (the
		// empty one over the cap, the full one back under it) and no diff
		// of what it already reflects.
		ch.capped = over
		ch.out = diff{}
		ch.counted = [2]int{-1, -1}
		ch.keys = nil // kept only while capped: small channels pay no map
		if over {
			ch.keys = map[string]int{}
			for _, l := range ch.local {
				ch.keys[l.key]++
			}
			for _, g := range ch.remote {
				for _, m := range g.members {
					ch.keys[m.key]++
				}
			}
		}
		for _, l := range ch.local {
			if !l.needState {
				l.needState = true
				ch.fresh = append(ch.fresh, l)
			}
		}
	}
	if !ch.out.empty() {
		payload := appendDiff(nil, ch.out)
		ch.out = diff{}
		var enc [3]*transport.Message
		for _, l := range ch.local {
			if l.needState {
				continue // its state will reflect the diff
			}
			if enc[l.v] == nil {
				enc[l.v] = transport.NewText(phoenix.AppendMessage(nil, l.v, phoenix.Null, phoenix.Null, ch.topic, EventDiff, payload))
			}
			*targets = append(*targets, target{l.conn, enc[l.v]})
		}
	}
	if ch.syncing {
		return // the states wait for the other gateways' (start)
	}
	var count [3]*transport.Message
	countMsg := func(v phoenix.Version) *transport.Message {
		if count[v] == nil {
			p := []byte(`{"count":`)
			p = strconv.AppendInt(p, int64(len(ch.keys)), 10)
			p = append(p, `,"metas":`...)
			p = strconv.AppendInt(p, int64(ch.metas), 10)
			count[v] = transport.NewText(phoenix.AppendMessage(nil, v, phoenix.Null, phoenix.Null, ch.topic, EventCount, append(p, '}')))
		}
		return count[v]
	}
	if len(ch.fresh) > 0 {
		var v1 *transport.Message
		for _, l := range ch.fresh {
			if l.gone {
				continue
			}
			l.needState = false
			var m *transport.Message
			switch {
			case ch.capped:
				m = transport.NewText(phoenix.AppendMessage(nil, l.v, l.joinRef, phoenix.Null, ch.topic, EventState, []byte("{}")))
			case l.v == phoenix.V1:
				if v1 == nil {
					st := ch.state()
					v1 = transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, phoenix.Null, ch.topic, EventState, st[:len(st)-1]))
				}
				m = v1
			default:
				if ch.tail == nil {
					ch.tail = transport.NewText(ch.state())
				}
				m = &transport.Message{Data: phoenix.AppendHead(nil, l.joinRef, phoenix.Null, ch.topic, EventState), Tail: ch.tail}
			}
			*targets = append(*targets, target{l.conn, m})
			if ch.capped {
				*targets = append(*targets, target{l.conn, countMsg(l.v)})
			}
		}
		clear(ch.fresh)
		ch.fresh = ch.fresh[:0]
		if cap(ch.fresh) > 1024 {
			ch.fresh = nil // do not keep a storm's backlog
		}
	}
	// Counts to everyone when they changed, at most every CountInterval
	// (housekeep flushes the channel again when one is due).
	if ch.capped && ch.counted != [2]int{len(ch.keys), ch.metas} && now.Sub(ch.countAt) >= t.cfg.CountInterval {
		if ch.counted[0] >= 0 {
			for _, l := range ch.local {
				*targets = append(*targets, target{l.conn, countMsg(l.v)})
			}
		}
		ch.counted, ch.countAt = [2]int{len(ch.keys), ch.metas}, now
	}
}

// housekeep heartbeats, expires silent gateways, drops idle channels and
// retries failed subscriptions.
func (t *Tracker) housekeep(now time.Time) {
	type pub struct {
		topic string
		msg   []byte
	}
	var pubs []pub
	var unsubs []broker.Subscription
	t.mu.Lock()
	for k, r := range t.recent {
		// Full again: forgetting it changes nothing (the next join is
		// free, its leave starts a new entry at RejoinBurst-1).
		if r.refill(now, t.cfg.RejoinInterval, t.cfg.RejoinBurst); r.tokens >= float64(t.cfg.RejoinBurst) {
			delete(t.recent, k)
		}
	}
	for topic, ch := range t.chans {
		for id, g := range ch.remote {
			if now.Sub(g.lastSeen) > g.ttl {
				t.dropRemote(ch, id)
			}
		}
		if len(ch.local) == 0 {
			if !ch.dirty && !ch.subscribing && now.Sub(ch.emptySince) >= t.cfg.Grace {
				delete(t.chans, topic)
				pubs = append(pubs, pub{topic, t.encode(&wire{T: kindBye})})
				if ch.sub != nil {
					unsubs = append(unsubs, ch.sub)
				}
			}
			continue
		}
		if ch.capped && ch.counted != [2]int{len(ch.keys), ch.metas} {
			t.markDirty(ch) // a count is due (flush sends it when the interval allows)
		}
		if !now.Before(ch.nextHB) {
			ch.nextHB = now.Add(ch.opts.TTL / 3)
			pubs = append(pubs, pub{topic, t.encode(&wire{T: kindHB, Seq: ch.seq, TTL: ch.opts.TTL.Milliseconds()})})
		}
		if ch.sub == nil && !ch.subscribing && now.Sub(ch.lastTry) >= 2*time.Second {
			ch.subscribing, ch.lastTry = true, now
			t.background(func() { t.start(ch) })
		}
	}
	t.mu.Unlock()
	for _, p := range pubs {
		_ = t.cfg.Bus.PresencePublish(p.topic, p.msg) // best effort: peers' TTL covers a lost one
	}
	for _, s := range unsubs {
		s.Unsubscribe()
	}
}

// background runs f on its own goroutine, counted in t.bg (t.mu held).
// Once Close began it runs nothing: Close waits for what runs.
func (t *Tracker) background(f func()) {
	if t.closing {
		return
	}
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		f()
	}()
}

// dropRemote forgets a gateway's members of ch: leaves for local clients
// (t.mu held).
func (t *Tracker) dropRemote(ch *chanState, id string) {
	g := ch.remote[id]
	delete(ch.remote, id)
	for _, m := range g.members {
		t.changed(ch, false, m, false)
	}
}

// start subscribes to the channel's presence traffic and asks the other
// gateways for their state; members tracked meanwhile then get
// presence_state. On failure they get the local state and the subscription
// is retried by housekeep.
func (t *Tracker) start(ch *chanState) {
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	sub, err := t.cfg.Bus.PresenceSubscribe(ctx, ch.topic, func(msg []byte, reply func([]byte) error) {
		t.receive(ch, msg, reply)
	})
	t.mu.Lock()
	ch.subscribing = false
	if t.chans[ch.topic] != ch {
		t.mu.Unlock()
		if sub != nil {
			sub.Unsubscribe()
		}
		return
	}
	if err != nil && t.ctx.Err() == nil { // not because Close cancelled it
		t.cfg.Logger.Warn("presence: subscribe failed", "topic", ch.topic, "err", err)
	} else if err == nil {
		ch.sub = sub
	}
	t.mu.Unlock()
	if err == nil {
		t.request(ctx, ch, "")
	}
	t.mu.Lock()
	ch.syncing = false
	t.markDirty(ch) // the next flush sends the held-back states
	t.mu.Unlock()
}

// request asks the other gateways (or one) for their local state of ch
// and applies the answers.
func (t *Tracker) request(ctx context.Context, ch *chanState, to string) {
	req := t.encode(&wire{T: kindSync, To: to})
	err := t.cfg.Bus.PresenceRequest(ctx, ch.topic, req, t.cfg.SyncWindow, func(b []byte) bool {
		t.receive(ch, b, nil)
		return true
	})
	if err != nil {
		t.cfg.Logger.Debug("presence: sync request failed", "topic", ch.topic, "err", err)
	}
}

// Close flushes what is pending, tells the other gateways this one is gone
// (so they drop its members at once rather than after the TTL) and drops
// every subscription. Call it after the connections were closed.
func (t *Tracker) Close() {
	t.closeOnce.Do(func() {
		close(t.stop)
		<-t.done
		// Subscriptions and sync requests under way end now (a request
		// would otherwise wait out its window on a bus about to close).
		t.mu.Lock()
		t.closing = true
		t.mu.Unlock()
		t.cancel()
		t.bg.Wait()
		t.flush()
		t.mu.Lock()
		chans := t.chans
		t.chans = map[string]*chanState{}
		t.mu.Unlock()
		bye := t.encode(&wire{T: kindBye})
		for topic, ch := range chans {
			_ = t.cfg.Bus.PresencePublish(topic, bye) // best effort: peers' TTL covers a lost bye
			if ch.sub != nil {
				ch.sub.Unsubscribe()
			}
		}
	})
}

// --- bus messages ---

// wire is a message between gateways. Member sets use the Phoenix shape
// ({key: {metas: [...]}}), so `nats sub 'fabric_presence.>'` reads like
// the client side.
type wire struct {
	T      string               `json:"t"`
	GW     string               `json:"gw"`
	Seq    uint64               `json:"seq,omitempty"`
	TTL    int64                `json:"ttl,omitempty"` // ms: the sender's expiry
	To     string               `json:"to,omitempty"`
	Joins  map[string]wireMetas `json:"joins,omitempty"`
	Leaves map[string]wireMetas `json:"leaves,omitempty"`
	State  map[string]wireMetas `json:"state,omitempty"`
}

type wireMetas struct {
	Metas []json.RawMessage `json:"metas"`
}

func groupsOf(g map[string][]json.RawMessage) map[string]wireMetas {
	if len(g) == 0 {
		return nil
	}
	out := make(map[string]wireMetas, len(g))
	for k, v := range g {
		out[k] = wireMetas{v}
	}
	return out
}

func (t *Tracker) encode(w *wire) []byte {
	w.GW = t.id
	return encodeJSON(w)
}

// receive handles one bus message for ch (a subscription or a sync answer).
func (t *Tracker) receive(ch *chanState, data []byte, reply func([]byte) error) {
	// The subscription brings back this gateway's own messages: skip them
	// unparsed (encode writes "t" then "gw" first), a diff of a join storm
	// being as big as the storm.
	if head := data[:min(len(data), 64)]; bytes.Contains(head, t.selfMark) {
		return
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil || w.GW == "" || w.GW == t.id {
		return
	}
	t.mu.Lock()
	if t.chans[ch.topic] != ch {
		t.mu.Unlock()
		return
	}
	if w.T == kindSync {
		if reply == nil || !(w.To == t.id || (w.To == "" && len(ch.local) > 0)) {
			t.mu.Unlock()
			return
		}
		ans := t.encode(&wire{T: kindState, Seq: ch.seq, TTL: ch.opts.TTL.Milliseconds(), State: groupsOf(ch.localState())})
		t.mu.Unlock()
		_ = reply(ans) // the asker retries on its next sync
		return
	}
	now := t.cfg.now()
	g := ch.remote[w.GW]
	if w.T == kindBye {
		if g != nil {
			t.dropRemote(ch, w.GW)
		}
		t.mu.Unlock()
		return
	}
	if g == nil {
		g = &remoteGW{members: map[string]meta{}}
		ch.remote[w.GW] = g
	}
	g.lastSeen = now
	g.ttl = ch.opts.TTL
	if w.TTL > 0 {
		g.ttl = time.Duration(w.TTL) * time.Millisecond
	}
	ask := false
	switch w.T {
	case kindDiff:
		if g.synced && w.Seq <= g.seq {
			break // already in the state we applied
		}
		if g.synced && w.Seq > g.seq+1 {
			g.synced = false // missed a diff: ask for the state
		}
		if !g.synced {
			if len(g.log) < 1024 {
				g.log = append(g.log, &w)
			}
			ask = true
		}
		t.applyDiff(ch, g, &w)
		g.seq = max(g.seq, w.Seq)
	case kindHB:
		if w.Seq > g.seq {
			g.synced = false // missed a diff
		}
		ask = !g.synced
	case kindState:
		t.applyState(ch, g, &w)
	}
	if ask && !ch.syncing && now.Sub(g.asked) >= time.Second {
		g.asked = now
		t.background(func() {
			ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
			defer cancel()
			t.request(ctx, ch, w.GW)
		})
	}
	t.mu.Unlock()
}

func refOf(raw json.RawMessage) string {
	var r struct {
		Ref string `json:"phx_ref"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	return r.Ref
}

// applyDiff applies a remote diff: joins then leaves, each only if it
// changes the gateway's set, so repeated or reordered messages are
// harmless (t.mu held).
func (t *Tracker) applyDiff(ch *chanState, g *remoteGW, w *wire) {
	for key, ms := range w.Joins {
		for _, raw := range ms.Metas {
			ref := refOf(raw)
			if _, ok := g.members[ref]; ok || ref == "" {
				continue
			}
			m := meta{key: key, ref: ref, raw: raw}
			g.members[ref] = m
			t.changed(ch, true, m, false)
		}
	}
	for _, ms := range w.Leaves {
		for _, raw := range ms.Metas {
			ref := refOf(raw)
			if m, ok := g.members[ref]; ok {
				delete(g.members, ref)
				t.changed(ch, false, m, false)
			}
		}
	}
}

// applyState replaces a gateway's set with its state as of w.Seq. A state
// older than diffs already applied (answers travel apart from the channel
// subject) is completed with the diffs logged since (t.mu held).
func (t *Tracker) applyState(ch *chanState, g *remoteGW, w *wire) {
	if w.Seq < g.seq && g.synced {
		return // a late answer: what we have is newer
	}
	next := &remoteGW{members: map[string]meta{}}
	for key, ms := range w.State {
		for _, raw := range ms.Metas {
			if ref := refOf(raw); ref != "" {
				next.members[ref] = meta{key: key, ref: ref, raw: raw}
			}
		}
	}
	for _, d := range g.log {
		if d.Seq > w.Seq {
			for key, ms := range d.Joins {
				for _, raw := range ms.Metas {
					if ref := refOf(raw); ref != "" {
						next.members[ref] = meta{key: key, ref: ref, raw: raw}
					}
				}
			}
			for _, ms := range d.Leaves {
				for _, raw := range ms.Metas {
					delete(next.members, refOf(raw))
				}
			}
		}
	}
	for ref, m := range g.members {
		if _, ok := next.members[ref]; !ok {
			t.changed(ch, false, m, false)
		}
	}
	for ref, m := range next.members {
		if _, ok := g.members[ref]; !ok {
			t.changed(ch, true, m, false)
		}
	}
	g.members = next.members
	g.synced = true
	g.log = nil
	g.seq = max(g.seq, w.Seq)
}

// --- keys, metas, encoding ---

const maxKeyLen = 256

// presenceKey: the authenticated user; in anonymous mode the join param
// presence_key or user (a string or a number); else the connection id.
func presenceKey(m Member) string {
	if m.Sub != "" {
		return m.Sub
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(m.Params, &p) == nil {
		for _, name := range []string{"presence_key", "user"} {
			raw := bytes.TrimSpace(p[name])
			if len(raw) == 0 {
				continue
			}
			var s string
			if json.Unmarshal(raw, &s) == nil {
				if s != "" && len(s) <= maxKeyLen {
					return s
				}
				continue
			}
			var n json.Number
			if json.Unmarshal(raw, &n) == nil && len(n) <= maxKeyLen {
				return n.String()
			}
		}
	}
	return m.ConnID
}

// buildMeta is a member's meta: the app's meta from params[metaKey] (an
// object's fields are merged in; any other JSON value is kept under
// metaKey), then phx_ref, phx_ref_prev and online_at (unix ms), which the
// app cannot override. The app part is measured as it will be sent —
// decoded and re-encoded without HTML escaping, as Phoenix's Jason
// writes it — and dropped when over maxBytes: measuring the input instead
// let a 1 KiB meta of '&' become 6 KiB of \u0026 escapes in every state.
func buildMeta(ref, prev string, now time.Time, params []byte, metaKey string, maxBytes int) json.RawMessage {
	fields := map[string]any{}
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) == nil {
		// Re-encoding can shrink a value (whitespace, \u escapes) or grow
		// it (invalid UTF-8): only an input far over the bound is refused
		// unparsed.
		if v := bytes.TrimSpace(p[metaKey]); len(v) > 0 && len(v) <= 8*maxBytes {
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.UseNumber() // numbers keep their digits
			var val any
			if dec.Decode(&val) == nil && val != nil {
				app, ok := val.(map[string]any)
				if !ok {
					app = map[string]any{metaKey: val}
				}
				delete(app, "phx_ref")
				delete(app, "phx_ref_prev")
				delete(app, "online_at")
				if len(encodeJSON(app)) <= maxBytes {
					fields = app
				}
			}
		}
	}
	fields["phx_ref"] = ref
	if prev != "" {
		fields["phx_ref_prev"] = prev
	}
	fields["online_at"] = now.UnixMilli()
	return encodeJSON(fields)
}

// encodeJSON is json.Marshal without HTML escaping (<, >, & stay as they
// are, as in Phoenix's output): escaping would multiply an app's bytes
// by up to six after its size was checked.
func encodeJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// appendGroups encodes {key: {"metas": [...]}, ...}.
func appendGroups(dst []byte, groups map[string][]json.RawMessage) []byte {
	dst = append(dst, '{')
	first := true
	for key, metas := range groups {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, encodeJSON(key)...)
		dst = append(dst, `:{"metas":[`...)
		for i, m := range metas {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, m...)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, '}')
}

// appendDiff encodes {"joins": …, "leaves": …}.
func appendDiff(dst []byte, d diff) []byte {
	dst = append(dst, `{"joins":`...)
	dst = appendGroups(dst, d.joins)
	dst = append(dst, `,"leaves":`...)
	dst = appendGroups(dst, d.leaves)
	return append(dst, '}')
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	var b [8]byte
	rand.Read(b[:])
	n := uint64(0)
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return time.Duration(n % uint64(d))
}
