package natsbroker

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// liveSub is the live feed of one persistent topic: a core subscription on
// the stream's republish subject, whose messages carry their stream
// sequence (Nats-Sequence) and the previous sequence on the same subject
// (Nats-Last-Sequence). Checking that chain turns every loss on the core
// path — a NATS reconnect, a client-side slow-consumer drop — into a gap
// that is filled from the stream before anything later is delivered. The
// handler therefore sees each message of the topic exactly once, in order,
// each with Prev equal to the previous one's Offset; or a Reset when that
// cannot be guaranteed.
type liveSub struct {
	b     *Broker
	ns    *nsState
	topic string
	subj  string // stored subject, e.g. fabric.room.lobby
	h     broker.Handler

	guarded  // mu is held while h runs
	ready    bool
	buffered []*nats.Msg // arrivals before the head was known
	last     uint64      // offset of the last delivered message (or the start position)
	drops    int         // nats.go's drop count when last checked
	head     broker.Position
	epoch    string
	// marks is the latest moderation mark of the channel known here;
	// markPending says one arrived before the head was known.
	marks       uint64
	markPending bool

	nextHeld *liveSub    // the next feed of the same topic (nsLive.held)
	missed   atomic.Bool // a live message was lost in wildcard mode: resync
}

func (b *Broker) subscribeLive(ctx context.Context, n *nsState, topic, subj string, h broker.Handler) (broker.Subscription, error) {
	s := &liveSub{b: b, ns: n, topic: topic, subj: subj, h: h}
	liveSubj := b.livePrefix + subj[len(b.prefix):]
	// Subscribe first, then read the head: whatever is stored after the
	// head arrives on the subscription (buffered until now) or is fetched.
	// The head's requests follow the SUB on the same connection, so the
	// server registered the interest before it reads the head, and their
	// answers say it did: no separate PING round trip. In wildcard mode
	// there is no SUB: the namespace's wildcard was flushed before the
	// mode began (wildcard.go).
	if err := b.attach(n, s, liveSubj); err != nil {
		return nil, err
	}
	head, mark, err := b.headOf(ctx, n, subj)
	if err != nil {
		_ = s.Unsubscribe() // err is the one to report
		return nil, err
	}
	s.mu.Lock()
	s.head, s.last, s.epoch = head, head.Offset, head.Epoch
	s.marks = max(s.marks, mark)
	s.ready = true
	buffered := s.buffered
	s.buffered = nil
	for _, m := range buffered {
		s.process(ctx, m)
	}
	if s.markPending && s.marks > s.last {
		s.reset(ctx) // a mark stored after the head was read
	}
	s.markPending = false
	s.mu.Unlock()
	b.liveMu.Lock()
	b.live[s] = struct{}{}
	b.liveMu.Unlock()
	return s, nil
}

// headOf is the last offset stored on subj or its latest moderation mark,
// whichever is later, or the stream's last sequence when subj has neither
// (a position: nothing on subj exists up to it), as read at most a second
// ago (head.go). A head is never before a
// mark, so a client holding it does not resume "across" that mark.
// It also returns the latest mark's sequence (0: none).
func (b *Broker) headOf(ctx context.Context, n *nsState, subj string) (broker.Position, uint64, error) {
	epoch := n.getEpoch()
	// Both reads at once: a join waits for one round trip, not two.
	type markResult struct {
		seq uint64
		err error
	}
	marks := make(chan markResult, 1)
	go func() {
		seq, err := b.lastMark(ctx, n.stream, b.markSubject(n.name, subj))
		marks <- markResult{seq, err}
	}()
	res, err := b.directGet(ctx, n.stream, directReq{LastBySubj: subj})
	mr := <-marks
	if err != nil {
		return broker.Position{}, 0, err
	}
	mark, err := mr.seq, mr.err
	if err != nil {
		return broker.Position{}, 0, err
	}
	if !res.notFound || mark > 0 {
		var last uint64
		if !res.notFound {
			last = seqOf(res.msgs[0])
		}
		return broker.Position{Epoch: epoch, Offset: max(last, mark)}, mark, nil
	}
	last, err := b.recentLastSeq(ctx, n, epoch)
	if err != nil {
		return broker.Position{}, 0, err
	}
	return broker.Position{Epoch: epoch, Offset: last}, 0, nil
}

// Head implements broker.HeadSubscription.
func (s *liveSub) Head() broker.Position { return s.head }

func (s *liveSub) onLive(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if !s.ready {
		s.buffered = append(s.buffered, m)
		return
	}
	s.process(context.Background(), m)
}

// process handles one republished message (s.mu held).
func (s *liveSub) process(ctx context.Context, m *nats.Msg) {
	seq := seqOf(m)
	prev, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
	if seq <= s.last {
		// Already delivered (fetched while filling a gap), or the first
		// messages of a new incarnation of the stream, which start from 1
		// again: check which before the channel can stall.
		if prev < s.last {
			s.b.checkIncarnation(s.ns)
		}
		return
	}
	if prev > s.last && !s.fill(ctx, prev, seq) {
		return
	}
	msg, ok := s.b.convert(s.topic, m)
	p := s.last
	s.last = seq
	if !ok {
		return
	}
	// The chain is whole up to here, so the previous message the handler
	// saw is s.last (Nats-Last-Sequence may be lower when s.last is a
	// start position rather than a message).
	msg.Offset, msg.Prev = seq, p
	s.h(msg)
}

// fill fetches from the stream and delivers the topic's messages after
// s.last and before until, and must reach need (the live message's
// predecessor). A replica may lag, so a short answer is retried; if the
// chain cannot be repaired (history gone at the gateway's own position),
// the handler gets a Reset and fill returns false.
func (s *liveSub) fill(ctx context.Context, need, until uint64) bool {
	for tries := 0; s.last < need; {
		page, err := s.b.page(ctx, s.ns, s.topic, s.subj, s.last, 256)
		if err != nil || page.Reason != "" {
			s.b.log.Warn("natsbroker: live gap cannot be filled; resetting channel", "subject", s.subj, "err", err, "reason", page.Reason)
			s.reset(ctx)
			return false
		}
		progressed := false
		for _, pm := range page.Messages {
			if pm.Offset >= until {
				break
			}
			pm.Prev = s.last
			s.last = pm.Offset
			progressed = true
			s.h(pm)
		}
		if !progressed {
			if tries++; tries >= 5 {
				s.b.log.Warn("natsbroker: stream did not return the missing messages; resetting channel", "subject", s.subj)
				s.reset(ctx)
				return false
			}
			time.Sleep(time.Duration(tries) * 20 * time.Millisecond)
		}
	}
	return true
}

// reset re-reads the head and tells the handler to start over (s.mu held).
func (s *liveSub) reset(ctx context.Context) {
	head, mark, err := s.b.headOf(ctx, s.ns, s.subj)
	if err != nil {
		head = broker.Position{Epoch: s.ns.getEpoch(), Offset: max(s.last, s.marks)}
	}
	s.marks = max(s.marks, mark)
	s.last, s.epoch = head.Offset, head.Epoch
	s.h(&broker.Message{Topic: s.topic, Reset: true, Epoch: head.Epoch, Offset: head.Offset})
}

// applyMark handles a moderation mark of the topic stored at seq: the
// handler gets a Reset whose position is at or after the mark, so the hub
// drops its ring (cleared or removed messages are never served from
// memory) and its clients resume through replay, which obeys the mark.
// Live copies of covered messages still in flight are at or below the new
// position, so process drops them.
func (s *liveSub) applyMark(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || seq <= s.marks {
		return
	}
	s.marks = seq
	if !s.ready {
		s.markPending = true
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultRoundTrip)
	defer cancel()
	s.reset(ctx)
}

// Unsubscribe implements broker.Subscription.
func (s *liveSub) Unsubscribe() error {
	s.b.liveMu.Lock()
	delete(s.b.live, s)
	s.b.liveMu.Unlock()
	s.b.detach(s)
	return s.unsubscribe()
}

func (b *Broker) liveSubs() []*liveSub {
	b.liveMu.Lock()
	defer b.liveMu.Unlock()
	out := make([]*liveSub, 0, len(b.live))
	for s := range b.live {
		out = append(out, s)
	}
	return out
}

// resetNamespace resets every live subscription of a namespace whose epoch
// changed: offsets of the old stream mean nothing in the new one.
func (b *Broker) resetNamespace(n *nsState) {
	for _, s := range b.liveSubs() {
		if s.ns != n {
			continue
		}
		go func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed && s.epoch != n.getEpoch() {
				s.reset(context.Background())
			}
		}()
	}
}

// Resync catches every live subscription up with its stream: call it after
// the NATS connection came back, since core messages published while it
// was down are gone from the live feed (they are in the stream). Streams'
// epochs are re-read too, in case a stream was recreated meanwhile, and
// the presence buses assume other gateways again (presenceAway).
func (b *Broker) Resync(ctx context.Context) {
	b.presenceAway()
	b.refreshEpochs(ctx)
	for _, s := range b.liveSubs() {
		s.resync(ctx)
	}
}

// watchDrops repairs live feeds that lost their newest messages: a drop is
// normally noticed when the next message's chain does not match, but if the
// dropped messages were the last ones, no next message comes. Once a second
// each subscription's drop counter is compared and a grown one resynced.
func (b *Broker) watchDrops() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if tick%5 == 0 {
			// Advisories are core NATS (at most once): re-read the epochs
			// now and then, so a recreated stream is never mistaken for
			// a continuation of the old one.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.refreshEpochs(ctx)
			cancel()
		}
		for _, n := range b.namespaces {
			b.checkWildcardDrops(n)
		}
		for _, s := range b.liveSubs() {
			// A feed in wildcard mode has no subscription of its own; a
			// loss there marked it missed (wildcard.go).
			grown := s.missed.Swap(false)
			s.mu.Lock()
			if s.sub != nil {
				if n, err := s.sub.Dropped(); err == nil && n > s.drops {
					b.slowDrops.Add(uint64(n - s.drops))
					s.drops = n
					grown = true
				}
			}
			s.mu.Unlock()
			if grown {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s.resync(ctx)
				cancel()
			}
		}
	}
}

// resync delivers whatever the stream holds on the topic beyond s.last.
func (s *liveSub) resync(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.ready || s.epoch != s.ns.getEpoch() {
		return
	}
	// A moderation mark stored while the link was down (its republished
	// copy is lost): apply it now.
	if mark, err := s.b.lastMark(ctx, s.ns.stream, s.b.markSubject(s.ns.name, s.subj)); err == nil && mark > s.marks {
		s.marks = mark
		s.reset(ctx)
		return
	}
	res, err := s.b.directGet(ctx, s.ns.stream, directReq{LastBySubj: s.subj})
	if err == nil && !res.notFound {
		if last := seqOf(res.msgs[0]); last > s.last {
			s.fill(ctx, last, last+1)
		}
	}
}

func (b *Broker) refreshEpochs(ctx context.Context) {
	for _, n := range b.namespaces {
		b.refreshEpoch(ctx, n)
	}
}

func (b *Broker) refreshEpoch(ctx context.Context, n *nsState) {
	n.life.Lock()
	defer n.life.Unlock()
	b.refreshLocked(ctx, n)
}

// refreshLocked re-reads the stream (n.life held): a deleted one is
// recreated, a new incarnation (whoever made it) is adopted; settings an
// operator edited are learnt, not reverted.
func (b *Broker) refreshLocked(ctx context.Context, n *nsState) {
	st, err := b.js.Stream(ctx, n.stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// Deleted and the advisory missed: recreate (new epoch).
		if err := b.ensureStreamLocked(ctx, n); err != nil {
			b.log.Warn("natsbroker: cannot recreate stream", "stream", n.stream, "err", err)
		}
	case err == nil:
		if _, _, record := incarnation(n, st.CachedInfo()); record {
			// An incarnation no Fabric gateway recorded yet.
			if err := b.ensureStreamLocked(ctx, n); err != nil {
				b.log.Warn("natsbroker: cannot adopt stream", "stream", n.stream, "err", err)
			}
			return
		}
		b.learn(n, st.CachedInfo())
	}
}

// checkIncarnation re-reads the namespace's stream soon, off the caller's
// goroutine (at most one check at a time): a live message older than the
// feed's position says the stream may have been replaced.
func (b *Broker) checkIncarnation(n *nsState) {
	if !n.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b.refreshEpoch(ctx, n)
		cancel()
		// At most one check a second: after a gap is filled, the live
		// copies of the fetched messages look old too.
		select {
		case <-time.After(time.Second):
		case <-b.stop:
		}
		n.refreshing.Store(false)
	}()
}
