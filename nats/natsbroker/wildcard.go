package natsbroker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// One live subscription per namespace instead of one per channel.
//
// A persistent channel's live feed is a core subscription on its republish
// subject (live.go). Each costs about 1.5 KB between nats.go's
// Subscription and the embedded nats-server's client subscription and
// sublist nodes: with one channel per user, the largest per-connection
// cost left. Once a gateway holds more than WildcardThreshold channels of
// a namespace, the namespace switches to ONE subscription on
// <prefix>_live.<ns>.>, whose messages are routed by subject to the
// channels held here (into the same dispatch shard a channel's own
// subscription uses, so a channel's messages keep their order) and
// dropped for channels not held here. A channel joined in that mode needs
// no NATS subscription at all: no SUB, no interest to register.
//
// The handover loses and duplicates nothing because every republished
// message carries its stream sequence and its predecessor on the subject:
//
//   - to the wildcard: the wildcard is subscribed and flushed first, so
//     every message stored afterwards reaches it; a message stored before
//     reached the channel's own subscription, and the flush's PONG comes
//     after it on the connection, so it is in the shard's queue when the
//     channel subscriptions are dropped; a barrier through every shard
//     lets those queued messages be handled before the subscriptions'
//     shard entries go. A message that came both ways is recognised by
//     its sequence (at or below the last delivered: dropped, live.go);
//   - back to channels: each channel is subscribed and the batch flushed,
//     then the wildcard is unsubscribed, whatever it had received is
//     handed to the shards, and a barrier again lets it be handled.
//
// Losses in wildcard mode are handled like a channel subscription's: a
// message the forwarder cannot queue (its shard is full) marks its channel
// for a resync, and a drop nats.go counts on the wildcard (subject unknown)
// resyncs every channel of the namespace held here (watchDrops); a gap
// seen in a chain is filled as always.
//
// Ephemeral namespaces stay one subscription per channel: their messages
// carry no sequence to recognise a handover's duplicates by.

// Live subscription modes (Stream.Live).
const (
	// LiveAuto switches to the wildcard above WildcardThreshold channels
	// held and back below a quarter of it.
	LiveAuto = "auto"
	// LiveChannel keeps one subscription per channel.
	LiveChannel = "channel"
	// LiveNamespace uses the wildcard from the first channel on.
	LiveNamespace = "namespace"
)

// WildcardThreshold is how many channels of a namespace a gateway holds
// before LiveAuto switches to the wildcard. In wildcard mode every gateway
// receives every message of the namespace: a fleet of G gateways carries G
// times the namespace's message rate, where one subscription per channel
// carries each message only to the gateways that serve its channel. Below
// 1,000 channels the subscriptions cost at most 1.5 MB per namespace, too
// little to buy with other gateways' traffic; above it a gateway serves a
// large share of the namespace's channels anyway (one channel per user,
// users spread over the gateways), so most of what the wildcard brings is
// wanted, and the memory saved grows with every user.
const WildcardThreshold = 1000

// wildcardBackoff spaces switch attempts after one failed (NATS away).
const wildcardBackoff = 5 * time.Second

// nsLive is how a persistent namespace's channels are fed on this gateway.
type nsLive struct {
	mu sync.RWMutex
	// held is every live feed of the namespace by the subject's part
	// after the prefix (".room.u1": a slice of the feed's own subject, so
	// the key costs no string of its own, and of a republished message's
	// subject, so a lookup allocates nothing), except the namespace's own
	// bare topic, which the wildcard does not match; feeds of one topic
	// are chained through liveSub.nextHeld.
	held  map[string]*liveSub
	count int
	w     *wildcard // non-nil: wildcard mode, feeds have no subscription
	// up: switch to the wildcard above this many feeds (-1: never);
	// down: back below this many (-1: never).
	up, down  int
	switching bool      // a switch is under way
	notBefore time.Time // no switch before (a failed attempt's backoff)
}

// setMode sets the thresholds of a Stream.Live value (validated by New).
func (l *nsLive) setMode(mode string) {
	l.held = map[string]*liveSub{}
	switch mode {
	case LiveChannel:
		l.up, l.down = -1, -1
	case LiveNamespace:
		l.up, l.down = 0, -1
	default:
		l.up, l.down = WildcardThreshold, WildcardThreshold/4
	}
}

// wildcard is a namespace's one live subscription. nats.go delivers into ch
// (a full ch is a drop nats.go counts on sub); the forwarder moves each
// message into its subject's dispatch shard, where deliver hands it to the
// channel's feeds.
type wildcard struct {
	l          *nsLive
	livePrefix string
	sub        *nats.Subscription
	ch         chan *nats.Msg
	finish     chan struct{} // closed: forward what ch holds, then exit
	exited     chan struct{}
	seen       int // nats.go's drop count already accounted for (l.mu held)
}

// deliver runs on a shard goroutine for a wildcard message: the feeds of
// its subject, if any are held here, process it (in order: the forwarder
// queued it in the subject's shard).
func (w *wildcard) deliver(m *nats.Msg) {
	var buf [4]*liveSub
	subs := buf[:0]
	w.l.mu.RLock()
	for s := w.l.held[m.Subject[len(w.livePrefix):]]; s != nil; s = s.nextHeld {
		subs = append(subs, s)
	}
	w.l.mu.RUnlock()
	for _, s := range subs {
		s.onLive(m)
	}
}

// bare reports whether liveSubj is the namespace's own topic ("room"),
// which <live>.<ns>.> does not match.
func (b *Broker) bare(n *nsState, liveSubj string) bool {
	return len(liveSubj) == len(b.livePrefix)+1+len(n.name)
}

// attach registers a new feed: with its own subscription unless the
// namespace is in wildcard mode.
func (b *Broker) attach(n *nsState, s *liveSub, liveSubj string) error {
	if b.bare(n, liveSubj) {
		return b.subscribeAsync(&s.guarded, liveSubj, s.onLive)
	}
	l := &n.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		if err := b.subscribeAsync(&s.guarded, liveSubj, s.onLive); err != nil {
			return err
		}
	}
	key := s.subj[len(b.prefix):]
	s.nextHeld = l.held[key]
	l.held[key] = s
	l.count++
	b.maybeSwitch(n)
	return nil
}

// detach forgets a feed that is being unsubscribed.
func (b *Broker) detach(s *liveSub) {
	key := s.subj[len(b.prefix):]
	if len(key) == 1+len(s.ns.name) { // the bare topic: not held
		return
	}
	l := &s.ns.live
	l.mu.Lock()
	defer l.mu.Unlock()
	switch head := l.held[key]; {
	case head == nil:
		return // not held
	case head == s && s.nextHeld == nil:
		delete(l.held, key)
	case head == s:
		l.held[key] = s.nextHeld
	default:
		p := head
		for p != nil && p.nextHeld != s {
			p = p.nextHeld
		}
		if p == nil {
			return
		}
		p.nextHeld = s.nextHeld
	}
	s.nextHeld = nil
	l.count--
	b.maybeSwitch(s.ns)
}

// maybeSwitch starts a switch when the count crossed a threshold (l.mu
// held).
func (b *Broker) maybeSwitch(n *nsState) {
	l := &n.live
	if l.switching || time.Now().Before(l.notBefore) {
		return
	}
	select {
	case <-b.stop: // Close dropped the wildcards; the feeds are going
		return
	default:
	}
	switch {
	case l.w == nil && l.up >= 0 && l.count > l.up:
		l.switching = true
		go b.toWildcard(n)
	case l.w != nil && l.down >= 0 && l.count < l.down:
		l.switching = true
		go b.toChannels(n)
	}
}

// switchDone ends a switch and checks again: the count may have crossed
// the other threshold meanwhile.
func (b *Broker) switchDone(n *nsState, failed bool) {
	l := &n.live
	l.mu.Lock()
	defer l.mu.Unlock()
	l.switching = false
	if failed {
		l.notBefore = time.Now().Add(wildcardBackoff)
		return
	}
	b.maybeSwitch(n)
}

// switchCtx bounds a switch and ends it at Close.
func (b *Broker) switchCtx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// heldFeeds is every feed of the namespace (l.mu held).
func (l *nsLive) heldFeeds() []*liveSub {
	out := make([]*liveSub, 0, l.count)
	for _, s := range l.held {
		for ; s != nil; s = s.nextHeld {
			out = append(out, s)
		}
	}
	return out
}

// toWildcard replaces the namespace's channel subscriptions with the
// wildcard (see the top of the file for why nothing is lost).
func (b *Broker) toWildcard(n *nsState) {
	ctx, cancel := b.switchCtx()
	defer cancel()
	w, err := b.openWildcard(n)
	if err == nil {
		err = b.roundTrip(ctx)
		if err != nil {
			_ = b.closeWildcard(w)
			b.removeWildcard(w)
		}
	}
	if err != nil {
		b.log.Warn("natsbroker: cannot subscribe the namespace's live wildcard; keeping one subscription per channel",
			slog.String("namespace", n.name), slog.Any("err", err))
		b.switchDone(n, true)
		return
	}
	l := &n.live
	l.mu.Lock()
	select {
	case <-b.stop: // Close ran (closeWildcards) while this subscribed
		l.mu.Unlock()
		_ = b.closeWildcard(w)
		b.removeWildcard(w)
		return
	default:
	}
	l.w = w
	feeds := l.heldFeeds()
	l.mu.Unlock()
	type old struct {
		sub *nats.Subscription
		sh  *shard
	}
	olds := make([]old, 0, len(feeds))
	for _, s := range feeds {
		s.mu.Lock()
		if !s.closed && s.sub != nil {
			if d, err := s.sub.Dropped(); err == nil && d > s.drops {
				b.slowDrops.Add(uint64(d - s.drops))
				s.missed.Store(true) // watchDrops resyncs it
			}
			olds = append(olds, old{s.sub, s.sh})
			s.sub, s.sh, s.drops = nil, nil, 0
		}
		s.mu.Unlock()
	}
	for _, o := range olds {
		_ = o.sub.Unsubscribe() // the connection may be closed: nothing left to remove
	}
	// Messages the channel subscriptions queued before the flush are
	// handled (by their feeds, which stay the shard entries' callbacks)
	// before the entries go.
	if err := b.disp.barrier(ctx); err != nil {
		b.log.Warn("natsbroker: live wildcard handover not drained", slog.String("namespace", n.name), slog.Any("err", err))
	}
	for _, o := range olds {
		o.sh.remove(o.sub)
	}
	b.log.Info("natsbroker: namespace live feed is one wildcard subscription",
		slog.String("namespace", n.name), slog.Int("channels", len(feeds)), slog.Int("threshold", n.live.up))
	b.switchDone(n, false)
}

// toChannels gives every held feed its own subscription again and drops
// the wildcard.
func (b *Broker) toChannels(n *nsState) {
	ctx, cancel := b.switchCtx()
	defer cancel()
	l := &n.live
	l.mu.Lock()
	w := l.w
	l.w = nil // feeds attached from now on subscribe themselves
	feeds := l.heldFeeds()
	l.mu.Unlock()
	if w == nil { // Close took it
		b.switchDone(n, false)
		return
	}
	for _, s := range feeds {
		liveSubj := b.livePrefix + s.subj[len(b.prefix):]
		sub, sh, err := b.disp.subscribe(liveSubj, s.onLive)
		if err != nil {
			// The connection is closed: nothing is delivered any more.
			b.log.Warn("natsbroker: cannot resubscribe a channel", slog.String("subject", liveSubj), slog.Any("err", err))
			continue
		}
		s.mu.Lock()
		keep := !s.closed && s.sub == nil
		if keep {
			s.sub, s.sh, s.drops = sub, sh, 0
		}
		s.mu.Unlock()
		if !keep {
			_ = sub.Unsubscribe()
			sh.remove(sub)
		}
	}
	// Not flushed (NATS away): the subscriptions are sent on reconnect,
	// after which every channel is resynced (watchReconnects).
	_ = b.roundTrip(ctx)
	lost := b.closeWildcard(w)
	if err := b.disp.barrier(ctx); err != nil {
		b.log.Warn("natsbroker: live wildcard handover not drained", slog.String("namespace", n.name), slog.Any("err", err))
	}
	b.removeWildcard(w)
	if lost {
		for _, s := range feeds {
			s.missed.Store(true) // watchDrops resyncs them
		}
	}
	b.log.Info("natsbroker: namespace live feed is one subscription per channel again",
		slog.String("namespace", n.name), slog.Int("channels", len(feeds)), slog.Int("threshold", l.down))
	b.switchDone(n, false)
}

// openWildcard subscribes the namespace's wildcard (not flushed) and
// starts its forwarder.
func (b *Broker) openWildcard(n *nsState) (*wildcard, error) {
	w := &wildcard{l: &n.live, livePrefix: b.livePrefix, ch: make(chan *nats.Msg, b.disp.queue),
		finish: make(chan struct{}), exited: make(chan struct{})}
	sub, err := b.nc.ChanSubscribe(b.livePrefix+"."+n.name+".>", w.ch)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	b.disp.addAll(sub, w.deliver)
	go b.forward(w)
	return w, nil
}

// closeWildcard unsubscribes w and waits until the forwarder handed what
// it had received to the shards. It reports whether nats.go dropped
// messages on w that watchDrops has not seen.
func (b *Broker) closeWildcard(w *wildcard) (lost bool) {
	w.l.mu.Lock()
	if d, err := w.sub.Dropped(); err == nil && d > w.seen {
		// Read before Unsubscribe, which makes the count unreadable.
		b.slowDrops.Add(uint64(d - w.seen))
		w.seen = d
		lost = true
	}
	w.l.mu.Unlock()
	_ = w.sub.Unsubscribe()
	close(w.finish)
	<-w.exited
	return lost
}

// removeWildcard drops w's shard entries (after closeWildcard and a
// barrier).
func (b *Broker) removeWildcard(w *wildcard) {
	for i := range b.disp.shards {
		b.disp.shards[i].remove(w.sub)
	}
}

// forward moves the wildcard's messages into their subjects' shards,
// never blocking: a full shard is a loss, which marks the channel for a
// resync (watchDrops), as nats.go's drop on a channel subscription would.
func (b *Broker) forward(w *wildcard) {
	defer close(w.exited)
	for {
		select {
		case m := <-w.ch:
			b.forwardOne(w, m)
		case <-w.finish:
			for {
				select {
				case m := <-w.ch:
					b.forwardOne(w, m)
				default:
					return
				}
			}
		case <-b.stop:
			return
		}
	}
}

// forwardOne queues m for its channel's feeds, or drops it when none is
// held here (another gateway's channel: the wildcard's price). Dropping
// it before the feed attached loses nothing: a feed reads its head after
// it is attached, and m was stored before that.
func (b *Broker) forwardOne(w *wildcard, m *nats.Msg) {
	key := m.Subject[len(w.livePrefix):]
	w.l.mu.RLock()
	held := w.l.held[key] != nil
	w.l.mu.RUnlock()
	if !held {
		return
	}
	select {
	case b.disp.shardOf(m.Subject).ch <- m:
		return
	default:
	}
	w.l.mu.RLock()
	s := w.l.held[key]
	for x := s; x != nil; x = x.nextHeld {
		x.missed.Store(true)
	}
	w.l.mu.RUnlock()
	if s != nil {
		b.slowDrops.Add(1)
	}
}

// checkWildcardDrops is watchDrops' look at the namespace's wildcard: a
// drop nats.go counted there (subject unknown) resyncs every feed held.
func (b *Broker) checkWildcardDrops(n *nsState) {
	l := &n.live
	l.mu.Lock() // w.seen
	w := l.w
	var grown bool
	if w != nil {
		if d, err := w.sub.Dropped(); err == nil && d > w.seen {
			b.slowDrops.Add(uint64(d - w.seen))
			w.seen = d
			grown = true
		}
	}
	var feeds []*liveSub
	if grown {
		feeds = l.heldFeeds()
	}
	l.mu.Unlock()
	for _, s := range feeds {
		s.missed.Store(true)
	}
}

// closeWildcards drops every namespace's wildcard (Close): its shard
// entries would keep the shards' goroutines running.
func (b *Broker) closeWildcards() {
	for _, n := range b.namespaces {
		l := &n.live
		l.mu.Lock()
		w := l.w
		l.w = nil
		l.mu.Unlock()
		if w != nil {
			_ = w.sub.Unsubscribe()
			<-w.exited // b.stop is closed
			b.removeWildcard(w)
		}
	}
}

// WildcardNamespaces is how many persistent namespaces are fed through
// one wildcard subscription on this gateway right now.
func (b *Broker) WildcardNamespaces() int {
	k := 0
	for _, n := range b.namespaces {
		n.live.mu.RLock()
		if n.live.w != nil {
			k++
		}
		n.live.mu.RUnlock()
	}
	return k
}
