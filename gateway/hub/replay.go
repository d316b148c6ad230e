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
