package session

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Pushes: a client's events to its channels, checked, then published in
// arrival order by one goroutine per connection (or routed to the service
// handling the namespace), each answered exactly once.

// pushQueue is a connection's client pushes.
type pushQueue struct {
	bucket  bucket  // HandleMessage goroutine only
	bytes   bucket  // HandleMessage goroutine only
	pending []*push // under Session.mu: waiting to be published, in arrival order
	queued  int     // under Session.mu: payload bytes in pending
	running bool    // under Session.mu: a goroutine is draining pending
}

type push struct {
	f       phoenix.Frame
	payload []byte
	params  []byte    // the channel's join params
	assigns []byte    // the hooks' assigns of the channel
	at      time.Time // arrival: its timeout counts from here, queueing included
	// answered is set by whoever replies first: the bus's answer, or the
	// watchdog timer, which says "timeout" when the bus has not answered
	// within the push's timeout of its arrival (nats.go can keep a
	// publish waiting on its connection lock for seconds, beyond any
	// context). A push whose watchdog fired before it was sent is never
	// sent.
	answered atomic.Bool
	watchdog *time.Timer
}

// answer replies to p with the bus's answer unless the watchdog already
// did. (Called by the goroutine that took p from the queue, after the
// watchdog was set.)
func (s *Session) answer(p *push, ok bool, response []byte) {
	if p.answered.CompareAndSwap(false, true) {
		p.watchdog.Stop()
		s.reply(p.f.JoinRef, p.f.Ref, p.f.Topic, ok, response)
	}
}

// timedOut is the watchdog: it must not touch p.watchdog, which may not
// be assigned yet when a short timeout fires.
func (s *Session) timedOut(p *push) {
	if p.answered.CompareAndSwap(false, true) {
		s.refusePush(p.f.JoinRef, p.f, ReasonTimeout, nil)
	}
}

// refuseQueued answers a queued push with an error unless its watchdog
// answered it already. An outage the link monitor knows of
// (broker.ErrUnavailable) is logged by the monitor, once, not per push.
func (s *Session) refuseQueued(p *push, why string, err error) {
	if !p.answered.CompareAndSwap(false, true) {
		return
	}
	p.watchdog.Stop()
	if errors.Is(err, broker.ErrUnavailable) {
		err = nil
	}
	s.refusePush(p.f.JoinRef, p.f, why, err)
}

// pushTimeout is how long a push on topic may wait for its answer: the
// namespace's push_timeout for routed pushes, else Config.PublishTimeout.
func (s *Session) pushTimeout(topic string, routed bool) time.Duration {
	if routed {
		return s.cfg.Namespaces.PushTimeout(topic)
	}
	return s.cfg.PublishTimeout
}

// routes returns the broker's push routing when topic's namespace routes
// its pushes to a service (pushes: request) and the broker can.
func (s *Session) routes(topic string) (broker.Handlers, bool) {
	if !s.cfg.Namespaces.RoutesPushes(topic) {
		return nil, false
	}
	h, ok := s.cfg.Broker.(broker.Handlers)
	return h, ok
}

func (s *Session) push(f phoenix.Frame) {
	s.mu.Lock()
	ch := s.channel(f.Topic)
	ok := ch != nil && ch.joined() && (!f.JoinRef.Valid || ch.isJoinRef(f.JoinRef))
	s.mu.Unlock()
	if !ok {
		// Phoenix answers events for unknown topics with a null join_ref.
		s.refusePush(phoenix.Null, f, ReasonUnmatchedTopic, nil)
		return
	}
	if s.pushq == nil {
		s.mu.Lock() // publishPushes reads the pointer under mu
		s.pushq = new(pushQueue)
		s.mu.Unlock()
	}
	if !s.limit(&s.pushq.bucket, s.cfg.PushRate, s.cfg.PushBurst, f.JoinRef, f) {
		s.cfg.counters.refusedPush(ReasonRateLimited)
		s.cfg.counters.pushCounted.Add(1)
		return
	}
	if !s.limitBytes(&s.pushq.bytes, len(f.Payload), f) {
		s.cfg.counters.refusedPush(ReasonRateLimited)
		s.cfg.counters.pushBytes.Add(1)
		return
	}
	if s.policy != nil && !s.policy.CanPublish(f.Topic) {
		s.refusePush(f.JoinRef, f, ReasonUnauthorized, nil)
		return
	}
	// One rule for every push, published or routed to a service: a
	// client never sends what phoenix.js would take for the server's own
	// events (phx_reply, chan_reply_<ref>, presence_diff...).
	switch err := phoenix.CheckClientEvent(f.Event); err {
	case phoenix.ErrReservedEvent:
		s.refusePush(f.JoinRef, f, ReasonReservedEvent, nil)
		return
	case nil:
	default:
		s.refusePush(f.JoinRef, f, ReasonInvalidEvent, nil)
		return
	}
	if hb, ok := s.cfg.Broker.(broker.Health); ok && hb.Available(f.Topic) != nil {
		// The bus is known to be away: answer now rather than queue
		// behind a publish that may be stuck on it.
		r := ReasonPublishFailed
		if _, ok := s.routes(f.Topic); ok {
			r = ReasonUnavailable
		}
		s.refusePush(f.JoinRef, f, r, nil) // a known outage is logged once, by the link monitor
		return
	}
	// One goroutine at a time publishes this connection's pushes, so they
	// reach the bus in the order the client sent them.
	s.mu.Lock()
	q := s.pushq
	if s.cfg.PushBytesRate > 0 && len(q.pending) > 0 && q.queued+len(f.Payload) > max(s.cfg.PushBytesBurst, 1) {
		// The bus is slower than the rate lets pushes in (publishes
		// waiting for their timeout): what waits stays within one burst.
		s.mu.Unlock()
		s.cfg.counters.refusedPush(ReasonRateLimited)
		s.cfg.counters.pushBytes.Add(1)
		s.reply(f.JoinRef, f.Ref, f.Topic, false, []byte(`{"reason":"rate_limited","limit":"bytes","retry_after_ms":1000}`))
		return
	}
	p := &push{f: f, payload: append([]byte(nil), f.Payload...), params: ch.paramsJSON(), assigns: ch.assigns(), at: time.Now()} // f.Payload lives in the read buffer
	_, routed := s.routes(f.Topic)
	p.watchdog = time.AfterFunc(s.pushTimeout(f.Topic, routed), func() { s.timedOut(p) })
	q.pending = append(q.pending, p)
	q.queued += len(p.payload)
	start := !q.running
	q.running = true
	s.mu.Unlock()
	if start {
		go s.publishPushes()
	}
}

// refusedLogEvery spaces the log lines about refused pushes, per gateway:
// every refusal is counted (Stats.PushesRefused), and one client can cause
// thousands a second.
const refusedLogEvery = 10 * time.Second

// refusePush answers a push with {"reason": why}, counts it and logs it
// at a sampled rate: at Debug a connection's first refusal, at Info (Warn
// when the bus failed, err != nil) at most one line per refusedLogEvery
// per gateway, with the number left unlogged since the previous one.
func (s *Session) refusePush(joinRef phoenix.Ref, f phoenix.Frame, why string, err error) {
	s.cfg.counters.refusedPush(why)
	s.reply(joinRef, f.Ref, f.Topic, false, reason(why))
	s.logRefused(f, why, err)
}

func (s *Session) logRefused(f phoenix.Frame, why string, err error) {
	log := s.cfg.Logger
	s.mu.Lock()
	first := !s.warned
	s.warned = true
	s.mu.Unlock()
	if first {
		log.Debug("push refused", "conn", s.ID(), "topic", f.Topic, "event_len", len(f.Event), "reason", why, "err", err)
	}
	c := &s.cfg.counters
	now := monoNow()
	last := c.lastLog.Load()
	if last != 0 && time.Duration(now-last) < refusedLogEvery || !c.lastLog.CompareAndSwap(last, now) {
		c.unlogged.Add(1)
		return
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	// The event name is the client's: its length, not its bytes, goes to
	// the log.
	log.Log(context.Background(), level, "push refused (sampled; every refusal is counted in fabric_pushes_refused_total)",
		"conn", s.ID(), "topic", f.Topic, "event_len", len(f.Event), "reason", why, "err", err,
		"unlogged_since_last", c.unlogged.Swap(0))
}

func (s *Session) publishPushes() {
	for {
		s.mu.Lock()
		q := s.pushq
		if len(q.pending) == 0 || s.closed {
			q.pending, q.queued = nil, 0
			q.running = false
			s.mu.Unlock()
			return
		}
		p := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		q.queued -= len(p.payload)
		s.mu.Unlock()
		if p.answered.Load() {
			continue // timed out while queued: never sent
		}
		f := p.f
		if h, ok := s.routes(f.Topic); ok {
			s.requestPush(h, p)
			continue
		}
		// The deadline counts from the push's arrival, so a push queued
		// behind a stuck one still gets its answer within PublishTimeout
		// of being sent; and while the bus is known to be away the
		// broker fails each one at once (broker.Health).
		ctx, cancel := context.WithDeadline(context.Background(), p.at.Add(s.cfg.PublishTimeout))
		offset, err := s.cfg.Broker.Publish(ctx, f.Topic, f.Event, p.payload)
		cancel()
		switch {
		case errors.Is(err, broker.ErrTooLarge):
			s.refuseQueued(p, ReasonTooLarge, nil)
			continue
		case err != nil:
			s.refuseQueued(p, ReasonPublishFailed, err)
			continue
		}
		// Acked once the bus took it; in a persistent namespace once it
		// is stored, with its offset (a decimal string).
		var resp []byte
		if offset != 0 {
			resp = strconv.AppendUint([]byte(`{"offset":"`), offset, 10)
			resp = append(resp, `"}`...)
		}
		s.answer(p, true, resp)
	}
}

// requestPush hands a push to the service handling its namespace and
// relays the answer: Phoenix's handle_in over NATS.
func (s *Session) requestPush(h broker.Handlers, p *push) {
	f := p.f
	// From when the client sent it: a push queued behind a slow one gets
	// no more than its own push_timeout in all.
	ctx, cancel := context.WithDeadline(context.Background(), p.at.Add(s.pushTimeout(f.Topic, true)))
	defer cancel()
	r, err := h.Request(ctx, f.Topic, f.Event, p.payload,
		broker.PushMeta{Subject: s.Sub(), ConnID: s.ID(), JoinParams: p.params, Assigns: p.assigns, Sent: p.at})
	switch {
	case errors.Is(err, broker.ErrNoHandler):
		s.refuseQueued(p, ReasonNoHandler, nil)
	case errors.Is(err, context.DeadlineExceeded):
		s.refuseQueued(p, ReasonTimeout, nil)
	case errors.Is(err, broker.ErrTooLarge):
		s.refuseQueued(p, ReasonTooLarge, nil)
	case err != nil:
		s.refuseQueued(p, ReasonUnavailable, err)
	default:
		if p.answered.CompareAndSwap(false, true) {
			p.watchdog.Stop()
			s.relayReply(f, r)
		}
	}
}

// relayReply relays a service's answer to a routed push. Phoenix replies
// with a map or, from handle_in's {:reply, {status, {:binary, data}}, _},
// with bytes in a binary reply frame; a service does the same with a JSON
// object or a non-JSON body. Bytes reach v1 and LongPoll clients, which
// cannot take binary frames, as {"base64": …}, like binary broadcasts. JSON
// that is not an object is neither: the client is told the service
// answered something it cannot relay (invalid_reply), rather than given a
// response its code would misread.
func (s *Session) relayReply(f phoenix.Frame, r broker.Reply) {
	status := "ok"
	if !r.OK {
		status = "error"
	}
	if r.Binary {
		if s.v == phoenix.V2 && !s.textOnly {
			if b, err := phoenix.AppendBinaryReply(nil, f.JoinRef, f.Ref, f.Topic, status, r.Response); err == nil {
				s.conn.Send(transport.NewBinary(b))
				return
			}
			// A ref or topic over 255 bytes has no binary form.
		}
		s.send(phoenix.AppendReply(nil, s.v, f.JoinRef, f.Ref, f.Topic, status, phoenix.AppendBase64Payload(nil, r.Response)))
		return
	}
	if resp := bytes.TrimSpace(r.Response); len(resp) > 0 && resp[0] != '{' {
		s.refusePush(f.JoinRef, f, ReasonInvalidReply, nil)
		return
	}
	s.reply(f.JoinRef, f.Ref, f.Topic, r.OK, r.Response)
}
