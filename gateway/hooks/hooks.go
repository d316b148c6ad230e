// Package hooks asks backend services whether a connection or a join may
// proceed (broker.Hooks: Phoenix's connect/3 and join/3 in any language),
// so that a reconnect storm does not become a request storm the backend
// cannot take: a gateway-wide limit on requests in flight, a short cache of
// ok answers per (user, topic) that the service opts into, and counters.
// It fails closed: no service, no answer in time, an unreadable answer or
// the bus away all refuse.
package hooks

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/namespace"
)

// Reasons a hook refuses with when the service itself did not say why.
// Part of the wire contract (the client's join reply, the 403 body).
const (
	ReasonRefused      = "refused" // the service said no without a reason
	ReasonNoHandler    = "no_handler"
	ReasonTimeout      = "timeout"
	ReasonUnavailable  = "unavailable"
	ReasonInvalidReply = "invalid_reply"
)

// Kinds of hook, and the outcomes counted for each (Stats).
var (
	Kinds    = [...]string{"join", "connect"}
	Outcomes = [...]string{"ok", "cached", "refused", ReasonNoHandler, ReasonTimeout, ReasonUnavailable, ReasonInvalidReply}
)

const (
	kindJoin = iota
	kindConnect
)

// LatencyBuckets are the upper bounds of the request latency histogram.
var LatencyBuckets = [...]time.Duration{time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second}

// Config configures Hooks.
type Config struct {
	Broker broker.Hooks
	// Namespaces says which namespaces ask about their joins, which
	// joins, and how long an answer may take (nil: none).
	Namespaces *namespace.Set
	// Concurrency bounds the hook requests in flight from this gateway
	// (default 256). A request waits for a slot within its own timeout.
	Concurrency int
	// ConnectTimeout bounds the connect hook (default 5 s).
	ConnectTimeout time.Duration
	// CacheEntries bounds the cache of ok answers (default 100,000).
	CacheEntries int
}

// Hooks is shared by every session of a gateway.
type Hooks struct {
	b              broker.Hooks
	nss            *namespace.Set
	slots          chan struct{}
	connectTimeout time.Duration

	cacheMu  sync.Mutex
	cache    map[cacheKey]cached
	cacheMax int

	inFlight, maxInFlight, waiting atomic.Int64
	outcomes                       [len(Kinds)][len(Outcomes)]atomic.Uint64
	latency                        [len(Kinds)]histogram
}

type cacheKey struct{ sub, topic string }

type cached struct {
	a   broker.HookAnswer
	exp int64 // monotonic nanoseconds (since clockBase)
}

var clockBase = time.Now()

func now() int64 { return int64(time.Since(clockBase)) }

// New returns Hooks asking cfg.Broker.
func New(cfg Config) *Hooks {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = 100_000
	}
	return &Hooks{b: cfg.Broker, nss: cfg.Namespaces, slots: make(chan struct{}, cfg.Concurrency), connectTimeout: cfg.ConnectTimeout,
		cache: make(map[cacheKey]cached), cacheMax: cfg.CacheEntries}
}

// JoinHook reports whether joins on topic are asked, which ones
// (namespace.ScopeGranted or ScopeAll) and how long the answer may take:
// the namespace's join hook settings.
func (h *Hooks) JoinHook(topic string) (scope string, timeout time.Duration, ok bool) {
	return h.nss.JoinHook(topic)
}

// Join asks the join hook about a join that arrived at `at` and calls done
// once with the answer (reason "" when admitted, else why not), at the
// latest when the namespace's join timeout has passed since at. Join
// itself returns later, when the request is over: a request that timed out
// keeps its slot until the late answer comes or one more timeout passed,
// so a backend still busy with abandoned work is not sent more.
func (h *Hooks) Join(at time.Time, topic string, m broker.JoinMeta, done func(broker.HookAnswer, string)) {
	_, timeout, _ := h.nss.JoinHook(topic)
	key := cacheKey{m.Subject, topic}
	if m.Subject != "" {
		if a, ok := h.cached(key); ok {
			h.outcomes[kindJoin][1].Add(1)
			done(a, "")
			return
		}
	}
	h.ask(kindJoin, at, timeout, func(ctx context.Context) (broker.HookAnswer, error) {
		return h.b.RequestJoin(ctx, topic, m)
	}, func(a broker.HookAnswer, why string) {
		if why == "" && a.CacheTTL > 0 && m.Subject != "" {
			h.store(key, a)
		}
		done(a, why)
	})
}

// Connect asks the connect hook and waits for its answer (reason "" when
// admitted).
func (h *Hooks) Connect(m broker.ConnectMeta) (broker.HookAnswer, string) {
	type result struct {
		a   broker.HookAnswer
		why string
	}
	ch := make(chan result, 1)
	// The request outlives the answer when it times out (see Join): it
	// runs apart from the handshake, which gets its answer at the
	// deadline.
	go h.ask(kindConnect, time.Now(), h.connectTimeout, func(ctx context.Context) (broker.HookAnswer, error) {
		return h.b.RequestConnect(ctx, m)
	}, func(a broker.HookAnswer, why string) { ch <- result{a, why} })
	r := <-ch
	return r.a, r.why
}

func (h *Hooks) ask(kind int, at time.Time, timeout time.Duration, req func(context.Context) (broker.HookAnswer, error), done func(broker.HookAnswer, string)) {
	var answered atomic.Bool
	finish := func(a broker.HookAnswer, why string, outcome int) {
		if answered.CompareAndSwap(false, true) {
			h.outcomes[kind][outcome].Add(1)
			done(a, why)
		}
	}
	deadline := at.Add(timeout)
	watchdog := time.AfterFunc(time.Until(deadline), func() { finish(broker.HookAnswer{}, ReasonTimeout, outcomeIndex(ReasonTimeout)) })
	defer watchdog.Stop()
	h.waiting.Add(1)
	wait := time.NewTimer(time.Until(deadline))
	select {
	case h.slots <- struct{}{}:
		wait.Stop()
		h.waiting.Add(-1)
	case <-wait.C:
		h.waiting.Add(-1)
		// Answered here, not left to the watchdog: both timers end at the
		// deadline, and the deferred Stop could cancel it unfired.
		finish(broker.HookAnswer{}, ReasonTimeout, outcomeIndex(ReasonTimeout))
		return // nothing was sent
	}
	defer func() { <-h.slots }()
	if answered.Load() {
		return // timed out while it waited for a slot
	}
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for m := h.maxInFlight.Load(); n > m && !h.maxInFlight.CompareAndSwap(m, n); m = h.maxInFlight.Load() {
	}
	// The bus request may run one more timeout past the client's
	// deadline: the slot stays taken while the service may still work.
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(timeout))
	defer cancel()
	start := time.Now()
	a, err := req(ctx)
	h.latency[kind].observe(time.Since(start))
	switch {
	case err == nil && a.OK:
		finish(a, "", 0)
	case err == nil:
		why := a.Reason
		if why == "" {
			why = ReasonRefused
		}
		finish(broker.HookAnswer{Reason: why}, why, 2)
	case errors.Is(err, broker.ErrNoHandler):
		finish(broker.HookAnswer{}, ReasonNoHandler, outcomeIndex(ReasonNoHandler))
	case errors.Is(err, context.DeadlineExceeded):
		finish(broker.HookAnswer{}, ReasonTimeout, outcomeIndex(ReasonTimeout))
	case errors.Is(err, broker.ErrInvalidHookReply):
		finish(broker.HookAnswer{}, ReasonInvalidReply, outcomeIndex(ReasonInvalidReply))
	default:
		finish(broker.HookAnswer{}, ReasonUnavailable, outcomeIndex(ReasonUnavailable))
	}
}

func outcomeIndex(o string) int {
	for i, x := range Outcomes {
		if x == o {
			return i
		}
	}
	panic("hooks: unknown outcome " + o)
}

func (h *Hooks) cached(k cacheKey) (broker.HookAnswer, bool) {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	c, ok := h.cache[k]
	if !ok {
		return broker.HookAnswer{}, false
	}
	if now() >= c.exp {
		delete(h.cache, k)
		return broker.HookAnswer{}, false
	}
	return c.a, true
}

func (h *Hooks) store(k cacheKey, a broker.HookAnswer) {
	t := now()
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	if len(h.cache) >= h.cacheMax {
		// Full: drop what expired; if that frees nothing, this answer
		// is simply not cached (the cache only ever saves requests).
		for k, c := range h.cache {
			if t >= c.exp {
				delete(h.cache, k)
			}
		}
		if len(h.cache) >= h.cacheMax {
			return
		}
	}
	h.cache[k] = cached{a: a, exp: t + int64(a.CacheTTL)}
}

// Forget drops every cached answer of sub (all users when sub is "").
func (h *Hooks) Forget(sub string) {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	for k := range h.cache {
		if sub == "" || k.sub == sub {
			delete(h.cache, k)
		}
	}
}

type histogram struct {
	counts [len(LatencyBuckets) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

func (l *histogram) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sum.Add(int64(d))
}

// Latency is a snapshot of a latency histogram: Counts[i] requests took at
// most LatencyBuckets[i] (and more than the bucket before); the last count
// is for slower ones.
type Latency struct {
	Counts [len(LatencyBuckets) + 1]uint64
	Sum    time.Duration
}

// Count is the number of observations.
func (l Latency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// Stats is a snapshot of a Hooks' counters.
type Stats struct {
	// Outcomes[kind][outcome] counts answers (Kinds, Outcomes).
	Outcomes map[string]map[string]uint64
	// Latency of the requests sent, per kind.
	Latency map[string]Latency
	// InFlight requests now, the most ever at once, and the ones waiting
	// for a slot.
	InFlight, MaxInFlight, Waiting int64
	// Cached ok answers held.
	CacheEntries int
}

// Stats returns a snapshot.
func (h *Hooks) Stats() Stats {
	st := Stats{Outcomes: map[string]map[string]uint64{}, Latency: map[string]Latency{},
		InFlight: h.inFlight.Load(), MaxInFlight: h.maxInFlight.Load(), Waiting: h.waiting.Load()}
	for k, kind := range Kinds {
		m := make(map[string]uint64, len(Outcomes))
		for o, name := range Outcomes {
			m[name] = h.outcomes[k][o].Load()
		}
		st.Outcomes[kind] = m
		var l Latency
		for i := range l.Counts {
			l.Counts[i] = h.latency[k].counts[i].Load()
		}
		l.Sum = time.Duration(h.latency[k].sum.Load())
		st.Latency[kind] = l
	}
	h.cacheMu.Lock()
	st.CacheEntries = len(h.cache)
	h.cacheMu.Unlock()
	return st
}
