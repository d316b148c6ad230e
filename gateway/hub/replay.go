package hub

import (
	"context"
	"errors"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Replay: attaching a member, and for a resume sending what it missed —
// from the ring, or paged from the broker's history — before it joins the
// live feed with no gap and no duplicate at the junction.

// joined queues the member's join reply (ch.mu held) and counts a
// resume's outcome: every path that attaches a member goes through here
// once, before the member's first message. It reports false when the
// member withdrew (JoinReply said so): then it must not be attached.
func (ch *channel) joined(m Member, r JoinResult) bool {
	ch.h.countResume(r)
	l, ok := m.Key.(Listener)
	if !ok {
		return true
	}
	reply, ok := l.JoinReply(r)
	if !ok {
		return false
	}
	if reply != nil {
		m.Conn.Send(reply) // a closed connection: the session's close undoes the join
	}
	return true
}

// join replies to m and attaches it (ch.mu held), unless it withdrew.
func (ch *channel) join(m Member, r JoinResult, skipTo uint64) error {
	if !ch.joined(m, r) {
		return ErrWithdrawn
	}
	ch.add(m, skipTo)
	return nil
}

// attachNow attaches m if nothing has to be fetched (ch.mu held), and
// reports whether it handled the join; err is ErrWithdrawn when m
// withdrew instead.
func (ch *channel) attachNow(m Member) (handled bool, err error) {
	if !ch.persistent {
		return true, ch.join(m, JoinResult{}, 0)
	}
	res := JoinResult{Persistent: true, Head: ch.pos()}
	if m.Resume == nil {
		return true, ch.join(m, res, 0)
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
		if !ch.joined(m, res) {
			return true, ErrWithdrawn
		}
		ch.sendRing(m, r.Offset, ch.h.cfg.ReplayPage)
		ch.add(m, 0)
		return true, nil
	default:
		return false, nil // the broker must check or supply it
	}
	return true, ch.join(m, res, 0)
}

var errMemberGone = errors.New("hub: member's connection closed during replay")

// startReplay and endReplay keep m's key in ch.replaying while a replay
// runs (ch.mu held); endReplay reports whether it was still there, and
// replayingTo whether it is (Leave removes it).
func (ch *channel) startReplay(key any) {
	if ch.replaying == nil {
		ch.replaying = make(map[any]struct{})
	}
	ch.replaying[key] = struct{}{}
}

func (ch *channel) endReplay(key any) bool {
	if _, ok := ch.replaying[key]; !ok {
		return false
	}
	delete(ch.replaying, key)
	if len(ch.replaying) == 0 {
		ch.replaying = nil
	}
	return true
}

func (ch *channel) replayingTo(key any) bool {
	_, ok := ch.replaying[key]
	return ok
}

// attach replays what m missed, in steps, then attaches it. Every step
// sends under ch.mu after checking that m is still replaying, so once
// Leave returned nothing more reaches m.
func (ch *channel) attach(ctx context.Context, m Member) (err error) {
	ch.mu.Lock()
	if handled, err := ch.attachNow(m); handled {
		ch.mu.Unlock()
		return err
	}
	ch.startReplay(m.Key)
	ch.mu.Unlock()
	defer func() {
		ch.mu.Lock()
		ch.endReplay(m.Key)
		ch.mu.Unlock()
	}()
	cfg := &ch.h.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ReplayTimeout)
	defer cancel()
	from := *m.Resume
	replied := false
	idle := 0
	for {
		ch.mu.Lock()
		if !ch.replayingTo(m.Key) {
			ch.mu.Unlock()
			return ErrWithdrawn // left mid-replay: the leave was answered
		}
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
				ch.endReplay(m.Key)
				ch.add(m, skipTo)
				ch.mu.Unlock()
				return nil
			}
			from.Offset = last
			ch.mu.Unlock()
			if err := waitDrained(ctx, m.Conn, cfg.ReplayBacklog); err != nil {
				return ch.abandon(m, replied, err)
			}
			continue
		}
		ch.mu.Unlock()

		ch.fetching.Lock()
		ch.mu.Lock()
		if !replied {
			// The fetch we waited for may have put what m missed in the ring.
			if handled, err := ch.attachNow(m); handled {
				ch.endReplay(m.Key)
				ch.mu.Unlock()
				ch.fetching.Unlock()
				return err
			}
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
		if !ch.replayingTo(m.Key) {
			ch.mu.Unlock()
			return ErrWithdrawn
		}
		if page.Reason != "" {
			if replied {
				// Lost mid-replay (retention overtook us): never a
				// silent gap. The client rejoins and learns why.
				ch.mu.Unlock()
				return ch.abandon(m, true, errors.New(page.Reason))
			}
			ch.endReplay(m.Key)
			err := ch.join(m, JoinResult{Persistent: true, Head: ch.pos(), Resumed: true, Reason: page.Reason}, 0)
			ch.mu.Unlock()
			return err
		}
		if !replied {
			if !ch.joined(m, JoinResult{Persistent: true, Head: ch.pos(), Resumed: true, Recovered: true}) {
				ch.mu.Unlock()
				return ErrWithdrawn
			}
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
		if err := waitDrained(ctx, m.Conn, cfg.ReplayBacklog); err != nil {
			return ch.abandon(m, replied, err)
		}
	}
}

// abandon ends a replay that cannot finish. Before the join reply it is a
// plain join error; after it the member is reset so the client rejoins
// with its latest offset rather than silently missing messages — unless
// it left meanwhile (its leave was answered; a phx_error would follow the
// phx_close).
func (ch *channel) abandon(m Member, replied bool, err error) error {
	if !replied || errors.Is(err, errMemberGone) {
		return err
	}
	ch.mu.Lock()
	left := !ch.endReplay(m.Key)
	ch.mu.Unlock()
	if left {
		return ErrWithdrawn
	}
	ch.h.cfg.Logger.Warn("hub: replay abandoned; member reset", "topic", ch.topic, "err", err)
	if l, ok := m.Key.(Listener); ok {
		l.Reset()
	}
	return nil
}

// waitDrained waits until c has at most limit bytes queued: the
// transport wakes it (transport.Conn.Drained), so a replay step follows
// the socket's pace without polling, and without ever holding more than
// a page beyond limit in the queue.
func waitDrained(ctx context.Context, c transport.Conn, limit int) error {
	select {
	case <-c.Drained(limit):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
