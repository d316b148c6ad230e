package hub

import (
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Fan-out: the subscription's handler hands each live message to every
// member, encoded once per protocol variant.

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
	ahead := ch.ahead // nil on a non-persistent channel
	for _, m := range ch.members {
		if ahead != nil {
			if to, ok := ahead[m.Key]; ok && to >= msg.Offset {
				continue // sent during its replay: never twice
			}
		}
		for _, out := range e.enc.frames(ch.h, msg, m.Version, m.TextOnly) {
			if out != nil && m.Conn.Send(out) {
				n++
			}
		}
	}
	if ahead != nil {
		ch.caughtUp(msg.Offset)
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
	for _, m := range members {
		if sl := slotOf(m.Key); sl != nil {
			sl.i = 0
		}
	}
	ch.members = nil
	ch.index = nil
	ch.ahead = nil
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
