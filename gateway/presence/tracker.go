package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// The Tracker: its configuration, the members of each channel (Track,
// Update, Untrack, the re-join budget), the channel's size against its
// caps, and the loop that flushes and housekeeps.

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

// Member is one channel instance to track. An instance that is an
// Instance gives its connection, join_ref and connection id itself: Conn,
// JoinRef and ConnID are for instances that are not.
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
	cfg       Config
	id        string
	selfMark  []byte // `,"gw":"<id>",` as encode writes it
	refPrefix []byte // `"F<id>`: the start of this gateway's phx_refs
	refs      atomic.Uint64
	t0        time.Time // the origin of clock

	mu    sync.Mutex
	chans table[*chanState] // by topic
	dirty []*chanState
	// recent holds the re-join budgets of connections that left a topic
	// lately; kept apart from the channels, which may be dropped when
	// their members all flap out.
	recent map[rejoinKey]*rejoin
	// Scratch space reused under mu (flush and the sync answers), so that
	// encoding states and diffs allocates only the messages themselves.
	scratch  []meta
	hashes   []uint64
	buf      []byte
	keySeed  maphash.Seed
	flushing []target // flush's, outside mu: only one flush runs at a time
	// diffFrames is how many diff frames the last flush queued (mu): the
	// loop paces the next flush by it (pace).
	diffFrames int

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

	// sendMu is held while a flush sends what it collected under mu
	// (taken before mu is released); Untrack passes through it.
	sendMu sync.Mutex
}

// meta is l's meta as states and diffs list it (a copy: a diff keeps the
// meta a member had when it changed).
func (ch *chanState) meta(l *local) meta {
	return meta{key: l.key, id: l.id(), metaFields: metaFields{app: l.app, ref: l.ref, prev: ch.prevs[l], online: l.online}}
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

// neverCounted is a channel's counting.at before its first count: long
// enough ago that the first one is always due.
const neverCounted = -1 << 62

// chanState is a presence channel with local members: 144 bytes
// (TestStateSizes), so that a channel per user (10,000 of them) costs
// little beyond its member. What only some channels need lives apart:
// the batches waiting for the next flush (pending), phx_ref_prev (prevs),
// other gateways' members (remote) and the counts of a capped channel
// (counting).
type chanState struct {
	topic string
	opts  unique.Handle[namespace.Presence] // its namespace's, shared: 8 bytes, not 40

	local  members
	remote map[string]*remoteGW

	*pending                   // what the next flush sends; nil when none is held (see pend)
	seq      uint64            // last diff published
	prevs    map[*local]uint64 // phx_ref_prev of members whose meta was updated

	bytes int       // the state's encoded size (approximate from above), local and remote
	count *counting // over the caps: counts instead of the list (nil: under them)

	sub broker.Subscription
	// Times as Tracker.clock readings: 8 bytes each rather than a
	// time.Time's 24, which keeps a one-member channel's state in a
	// smaller allocation class (one channel per user: 10,000 of them).
	// The flags are packed after them: a bool between two words costs a
	// word.
	lastTry     time.Duration
	nextHB      time.Duration
	emptySince  time.Duration
	metas       int32 // metas, local and remote, kept as members change (O(1) each)
	dirty       bool  // in Tracker.dirty
	subscribing bool
	syncing     bool // initial sync: states are held back
}

// capped reports whether the channel is over its caps.
func (ch *chanState) capped() bool { return ch.count != nil }

// counting is what a channel over its caps keeps for the counts it sends
// instead of the list (Config.MaxMembers).
type counting struct {
	keys    int           // distinct keys, as last counted (keysFor)
	counted [2]int        // keys and metas last sent in EventCount
	at      time.Duration // when (Tracker.clock)
	dirty   bool          // members changed since the last count
	fresh   bool          // keys: no change since
}

// pending is what a channel's next flush sends, with the arrays kept
// from flush to flush. A channel holds it only while it has something
// pending or keeps arrays (a busy channel): an idle one (one channel per
// user, once its member's state went out) keeps 120 bytes less.
type pending struct {
	out   diff     // towards local clients (every change)
	bus   diff     // towards other gateways (local changes only)
	fresh []*local // tracked since the last flush: waiting for their state
}

// pend makes sure ch has its pending part (t.mu held).
func (ch *chanState) pend() *pending {
	if ch.pending == nil {
		ch.pending = &pending{}
	}
	return ch.pending
}

// unpend lets go of ch's pending part once it holds nothing, not even
// arrays (after a flush, t.mu held).
func (ch *chanState) unpend() {
	if p := ch.pending; p != nil && p.fresh == nil && p.out.joins == nil && p.out.leaves == nil &&
		p.bus.joins == nil && p.bus.leaves == nil {
		ch.pending = nil
	}
}

// clock is now as the time since the Tracker started (monotonic, as
// time.Time's Sub is), for the times kept per channel.
func (t *Tracker) clock(now time.Time) time.Duration { return now.Sub(t.t0) }

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
	t := &Tracker{cfg: cfg, id: cfg.GatewayID,
		selfMark:  []byte(`,"gw":` + string(encodeJSON(cfg.GatewayID)) + `,`),
		refPrefix: refPrefix(cfg.GatewayID), keySeed: maphash.MakeSeed(),
		stop: make(chan struct{}), done: make(chan struct{}), t0: cfg.now()}
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

// Track adds a channel instance (inst identifies it for Untrack; when it
// is an Instance, its connection, join_ref and connection id are asked of
// it rather than copied from m, see Instance). Its
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
	p := parseParams(m.Params)
	l := newLocal(inst, m)
	if key := keyOf(m, p); key != "" {
		l.setKey(key)
	} else {
		l.setConnKey()
	}
	l.app = appFields(p, opts.MetaKey, t.cfg.MaxMetaBytes)
	l.ref, l.online = t.newRef(), now.UnixMilli()

	t.mu.Lock()
	ch := t.channel(topic)
	if ch == nil {
		ch = &chanState{topic: topic, opts: unique.Make(opts),
			syncing: true, subscribing: true, lastTry: t.clock(now)}
		ch.nextHB = t.clock(now) + jitter(opts.TTL/3)
		t.chans.put(ch)
		t.background(func() { t.start(ch) })
	}
	if ch.local.get(inst) != nil {
		t.mu.Unlock()
		return true
	}
	ch.local.put(l)
	pd := ch.pend()
	pd.fresh = append(pd.fresh, l)
	ch.emptySince = 0
	t.changed(ch, true, ch.meta(l), true)
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
	ch := t.channel(topic)
	if ch == nil {
		return false
	}
	l := ch.local.get(inst)
	if l == nil {
		return false
	}
	old := ch.meta(l)
	p := map[string]json.RawMessage{ch.opts.Value().MetaKey: appMeta}
	l.app, l.ref, l.online = appFields(p, ch.opts.Value().MetaKey, t.cfg.MaxMetaBytes), t.newRef(), t.cfg.now().UnixMilli()
	if ch.prevs == nil {
		ch.prevs = map[*local]uint64{}
	}
	ch.prevs[l] = old.ref
	t.changed(ch, false, old, true)
	t.changed(ch, true, ch.meta(l), true)
	return true
}

// Untrack removes a channel instance (idempotent).
func (t *Tracker) Untrack(topic string, inst any) {
	// Once the instance is out, wait for a flush that may have taken a
	// frame for it to finish sending: after Untrack nothing of presence
	// is queued for it, so the session's phx_close is its last frame.
	defer t.waitSends()
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.channel(topic)
	if ch == nil {
		return
	}
	l := ch.local.get(inst)
	if l == nil {
		return
	}
	ch.local.del(inst)
	l.gone = true
	t.changed(ch, false, ch.meta(l), true)
	delete(ch.prevs, l)
	now := t.cfg.now()
	if ch.local.len() == 0 {
		ch.emptySince = t.clock(now)
	}
	// Remember the leave for AdmitJoin: the join that ends here spent
	// one token. Entries go once refilled (housekeep), so the map holds
	// only the last RejoinInterval's leavers.
	k := rejoinKey{topic, l.conn()}
	if t.recent == nil {
		t.recent = map[rejoinKey]*rejoin{}
	}
	if t.recent[k] == nil {
		t.recent[k] = &rejoin{tokens: float64(t.cfg.RejoinBurst - 1), last: now}
	}
}

// waitSends returns once no flush is sending what it collected before
// now: a barrier, the critical section is empty on purpose.
func (t *Tracker) waitSends() {
	t.sendMu.Lock()
	t.sendMu.Unlock() //nolint:staticcheck // SA2001: a barrier
}

// changed records a membership change (t.mu held): towards local clients
// always, towards the bus when it is a local member's.
func (t *Tracker) changed(ch *chanState, join bool, m meta, isLocal bool) {
	ch.pend()
	if ch.count == nil {
		ch.out.add(join, m) // a capped channel's members get counts instead
	}
	if isLocal {
		ch.bus.add(join, m)
	}
	t.account(ch, join, &m)
	if c := ch.count; c != nil {
		c.dirty, c.fresh = true, false
	}
	t.markDirty(ch)
}

// stateOverhead is what a meta adds to a state besides its own bytes and
// its key's: the quotes, `:{"metas":[`, `]}` and commas.
const stateOverhead = 18

// account keeps the channel's size as members change.
func (t *Tracker) account(ch *chanState, join bool, m *meta) {
	size := t.metaSize(m) + m.keyLen() + stateOverhead
	if join {
		ch.metas++
		ch.bytes += size
		return
	}
	ch.metas--
	ch.bytes -= size
}

// over reports whether the channel is past its caps, with hysteresis: a
// capped channel stays capped until it is below 90 % of both.
func (t *Tracker) over(ch *chanState) bool {
	maxM, maxB := t.cfg.MaxMembers, t.cfg.MaxStateBytes
	if ch.opts.Value().MaxMembers > 0 {
		maxM = ch.opts.Value().MaxMembers
	}
	if ch.opts.Value().MaxStateBytes > 0 {
		maxB = min(maxB, ch.opts.Value().MaxStateBytes) // only lower: it must fit the connection budget
	}
	metas := int(ch.metas)
	if ch.capped() {
		return metas*10 > maxM*9 || ch.bytes*10 > maxB*9
	}
	return metas > maxM || ch.bytes > maxB
}

func (t *Tracker) markDirty(ch *chanState) {
	if !ch.dirty {
		ch.dirty = true
		t.dirty = append(t.dirty, ch)
	}
}

func (t *Tracker) loop() {
	defer close(t.done)
	every := t.cfg.Flush
	tick := time.NewTimer(every)
	defer tick.Stop()
	var lastHK time.Time
	quiet := 0 // flushes in a row that had nothing to do
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		if t.flush() {
			quiet = 0
		} else if quiet++; quiet == 20 {
			t.releaseScratch() // the joins settled: an idle gateway keeps no buffers
		}
		t.mu.Lock()
		every = t.pace(every, t.diffFrames)
		t.mu.Unlock()
		tick.Reset(every)
		if now := t.cfg.now(); now.Sub(lastHK) >= 250*time.Millisecond {
			lastHK = now
			t.housekeep(now)
		}
	}
}

// Pacing flushes under churn. Every diff frame is a write to its member's
// socket (~8 µs of kernel time on loopback), and a flush sends one to
// every member of every room that changed: in a reconnect wave of 10,000
// clients over 100 rooms every room changes at every flush, so each
// member got a diff every 50 ms until the wave was over (~12 per member,
// over a quarter of the gateway's CPU). A longer interval folds more
// joins and leaves into each member's one diff: the frames fall with the
// interval, the diffs say the same. So diffs are held to about busyDiffRate frames a
// second (~4 % of a core): a flush that queued more than that rate's
// worth for the time it waited doubles the wait before the next, up to
// maxFlushSlowdown × Flush (1 s by default; Phoenix's tracker broadcasts
// its deltas between nodes every 1.5 s); one that queued less than a
// quarter of it halves the wait back, so a gateway out of the wave is at
// Flush again within a few flushes, and one in between keeps its pace.
// A room of 250 members changing at every flush stays at 50 ms.
const (
	busyDiffRate     = 5_000
	maxFlushSlowdown = 20
)

// pace is the wait before the next flush, after one that queued frames
// diff frames and waited every.
func (t *Tracker) pace(every time.Duration, frames int) time.Duration {
	budget := int(busyDiffRate * every.Seconds())
	switch {
	case frames > budget:
		return min(2*every, maxFlushSlowdown*t.cfg.Flush)
	case frames < budget/4:
		return max(every/2, t.cfg.Flush)
	}
	return every
}

// releaseScratch drops the buffers flush reuses while members change
// (called by the loop, the only flusher, once flushes found nothing).
func (t *Tracker) releaseScratch() {
	t.flushing = nil
	t.mu.Lock()
	t.scratch, t.hashes, t.buf = nil, nil, nil
	t.mu.Unlock()
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
	var idle []*chanState // dropped after the loop: the table must not change under it
	for ch := range t.chans.all() {
		topic := ch.topic
		for id, g := range ch.remote {
			if now.Sub(g.lastSeen) > g.ttl {
				t.dropRemote(ch, id)
			}
		}
		if ch.local.len() == 0 {
			if !ch.dirty && !ch.subscribing && t.clock(now)-ch.emptySince >= t.cfg.Grace {
				idle = append(idle, ch)
				pubs = append(pubs, pub{topic, t.encode(&wire{T: kindBye})})
				if ch.sub != nil {
					unsubs = append(unsubs, ch.sub)
				}
			}
			continue
		}
		if ch.count != nil && ch.count.dirty {
			t.markDirty(ch) // a count may be due (flush sends it when the interval allows)
		}
		if t.clock(now) >= ch.nextHB {
			ch.nextHB = t.clock(now) + ch.opts.Value().TTL/3
			pubs = append(pubs, pub{topic, t.encode(&wire{T: kindHB, Seq: ch.seq, TTL: ch.opts.Value().TTL.Milliseconds()})})
		}
		if ch.sub == nil && !ch.subscribing && t.clock(now)-ch.lastTry >= 2*time.Second {
			ch.subscribing, ch.lastTry = true, t.clock(now)
			t.background(func() { t.start(ch) })
		}
	}
	for _, ch := range idle {
		t.chans.del(ch.home(), func(c *chanState) bool { return c == ch })
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
		t.chans = table[*chanState]{}
		t.mu.Unlock()
		bye := t.encode(&wire{T: kindBye})
		for ch := range chans.all() {
			_ = t.cfg.Bus.PresencePublish(ch.topic, bye) // best effort: peers' TTL covers a lost bye
			if ch.sub != nil {
				ch.sub.Unsubscribe()
			}
		}
	})
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
