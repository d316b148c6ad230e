package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Join and leave: the checks a phx_join passes, attaching the instance to
// the hub (at once, or from a goroutine that waits for the bus), the join
// reply, presence tracking, and every way an instance ends.

// joinDone counts the result of ch's join, once: the hub's JoinReply call
// and the joining goroutine can both see an end of the same join.
func (s *Session) joinDone(ch *channel, result string) {
	if ch.count() {
		s.cfg.counters.join(result)
	}
}

func (s *Session) join(f phoenix.Frame) {
	joinRef := f.JoinRef
	if !joinRef.Valid {
		joinRef = f.Ref
	}
	resume, ok := parseResume(f.Payload)
	if !ok {
		s.cfg.counters.join(JoinInvalid)
		s.reply(joinRef, f.Ref, f.Topic, false, reason(ReasonBadRequest))
		return
	}
	if f.Topic == phoenix.TopicPhoenix || s.cfg.Broker.ValidateTopic(f.Topic) != nil {
		s.cfg.counters.join(JoinInvalid)
		s.reply(joinRef, f.Ref, f.Topic, false, reason(ReasonInvalidTopic))
		return
	}
	if !s.limit(&s.joinBucket, s.cfg.JoinRate, s.cfg.JoinBurst, joinRef, f) {
		s.cfg.counters.join(JoinRateLimited)
		return
	}
	if s.cfg.Presence != nil {
		// Re-joins of one presence topic are limited per connection:
		// each costs a presence_state and a diff to every member.
		if wait := s.cfg.Presence.AdmitJoin(f.Topic, s.conn); wait > 0 {
			s.cfg.counters.join(JoinRateLimited)
			resp := strconv.AppendInt([]byte(`{"reason":"rate_limited","retry_after_ms":`), wait.Milliseconds(), 10)
			s.reply(joinRef, f.Ref, f.Topic, false, append(resp, '}'))
			return
		}
	}
	granted := s.policy == nil || s.policy.CanJoin(f.Topic) || s.joinToken(f)
	hooked, hookAll := s.joinHooked(f.Topic)
	if !granted && !hookAll {
		// No subscription is created for a refused join.
		s.cfg.counters.join(JoinUnauthorized)
		s.reply(joinRef, f.Ref, f.Topic, false, reason(ReasonUnauthorized))
		return
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.cfg.counters.join(JoinCanceled)
		return
	}
	if old := s.channel(f.Topic); old != nil {
		// Duplicate join: the latest wins; the old instance is closed
		// with its own join_ref, as Phoenix does.
		s.forget(old)
		old.setGone()
		s.cfg.Hub.Leave(old.topic, old)
		s.untrack(old)
		jr := old.joinRef()
		s.send(phoenix.AppendMessage(nil, s.v, jr, jr, old.topic, phoenix.EventClose, nil))
	}
	if len(s.channels) >= s.cfg.MaxChannels {
		s.mu.Unlock()
		s.cfg.counters.join(JoinTooManyChannels)
		s.reply(joinRef, f.Ref, f.Topic, false, reason(ReasonTooManyJoined))
		return
	}
	if b, ok := s.policy.(ChannelBudget); ok && !b.AcquireChannel() {
		s.mu.Unlock()
		s.cfg.counters.join(JoinUserBudget)
		s.reply(joinRef, f.Ref, f.Topic, false, reason(ReasonTooManyJoinedByUser))
		return
	}
	ch := newChannel(s, s.cfg.Hub.Intern(f.Topic), joinRef, f.Ref, joinParams(f.Payload), hooked)
	s.channels = append(s.channels, ch)
	member := hub.Member{
		Conn:     s.conn,
		Version:  s.v,
		TextOnly: s.textOnly,
		Key:      ch, // a hub.Listener: JoinReply and Reset below
		Resume:   resume,
	}
	if hooked {
		// Admitted by a service first (join/3): the request must not
		// hold up this connection's other messages.
		s.mu.Unlock()
		go s.askJoinHook(ch, member, granted, time.Now())
		return
	}
	s.attach(ch, member)
}

// attach adds a join instance that passed every check to the hub: at once
// when the topic is live here, else from a goroutine that waits for the
// bus. Called with s.mu held; it unlocks it.
func (s *Session) attach(ch *channel, member hub.Member) {
	if s.cfg.Hub.TryJoin(ch.topic, member) {
		s.announce(ch)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	go func() {
		// A join that needs the bus while the bus is known to be away is
		// answered at once, not after JoinTimeout (joins of a channel
		// already live here took TryJoin above and still succeed).
		var err error
		if hb, ok := s.cfg.Broker.(broker.Health); ok {
			err = hb.Available(ch.topic)
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.JoinTimeout)
			err = s.cfg.Hub.Join(ctx, ch.topic, member)
			cancel()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || s.channel(ch.topic) != ch {
			// Left, replaced or disconnected while joining: the leave was
			// already answered, and the hub sent nothing after it
			// (ErrWithdrawn); undo a membership that made it.
			if err == nil {
				s.cfg.Hub.Leave(ch.topic, ch)
			}
			s.joinDone(ch, JoinCanceled) // unless JoinReply counted it
			return
		}
		if err == nil {
			s.announce(ch)
			return
		}
		if !ch.joined() {
			s.joinDone(ch, JoinError)
			s.forget(ch)
			if !errors.Is(err, broker.ErrUnavailable) {
				s.cfg.Logger.Warn("join failed", "topic", ch.topic, "err", err)
			}
			s.reply(ch.joinRef(), ch.joinMsgRef(), ch.topic, false, reason(ReasonUnavailable))
		}
	}()
}

// JoinReply implements hub.Listener: the hub queues the reply itself,
// under its channel lock, so it precedes every message of the channel.
// It only encodes (and counts): it must not take s.mu, which the
// session may hold around TryJoin.
func (ch *channel) JoinReply(r hub.JoinResult) (*transport.Message, bool) {
	s := ch.s
	if ch.gone() {
		s.joinDone(ch, JoinCanceled)
		return nil, false // the client already left this instance
	}
	ch.setJoined()
	s.joinDone(ch, JoinOK)
	return transport.NewText(phoenix.AppendReply(nil, s.v, ch.joinRef(), ch.joinMsgRef(), ch.topic, "ok",
		ch.hookResponse(joinResponse(r)))), true
}

// announce tells the rest of the gateway about an instance the hub
// attached (s.mu held, ch current): the lifecycle event, and presence —
// after the join reply, which the hub queued, so presence_state follows
// it. Outside the hub's locks: nothing here holds up a channel.
func (s *Session) announce(ch *channel) {
	if !ch.joined() || ch.live {
		return
	}
	ch.live = true
	s.emitWith("join", ch.topic, ch.assigns())
	s.track(ch)
}

// Reset implements hub.Listener.
func (ch *channel) Reset() { ch.s.reset(ch) }

// joinParams keeps a join's params for routed pushes; the common empty
// ones cost nothing per channel.
func joinParams(p []byte) string {
	switch string(bytes.TrimSpace(p)) {
	case "{}", "null", "":
		return ""
	}
	return string(p)
}

// channel returns the current instance of topic, or nil (s.mu held).
func (s *Session) channel(topic string) *channel {
	for _, ch := range s.channels {
		if ch.topic == topic {
			return ch
		}
	}
	return nil
}

// forget removes instance ch if it is still current (s.mu held).
func (s *Session) forget(ch *channel) {
	for i, c := range s.channels {
		if c == ch {
			s.releaseChannel()
			last := len(s.channels) - 1
			s.channels[i] = s.channels[last]
			s.channels[last] = nil
			s.channels = s.channels[:last]
			if last == 0 {
				s.channels = nil
			}
			return
		}
	}
}

// reset ends a channel instance whose history could not continue: the
// client gets phx_error and rejoins (with its offset) by itself.
// Under s.mu, like leave's phx_close: an instance that left meanwhile
// gets nothing after its phx_close.
func (s *Session) reset(ch *channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.channel(ch.topic) != ch {
		return
	}
	s.forget(ch)
	ch.setGone()
	s.untrack(ch)
	jr := ch.joinRef()
	s.send(phoenix.AppendMessage(nil, s.v, jr, jr, ch.topic, phoenix.EventError, nil))
}

// track registers a joined instance with presence (when its namespace has
// it). Called from announce.
func (s *Session) track(ch *channel) {
	if s.cfg.Presence == nil {
		return
	}
	// ch is a presence.Instance: the tracker asks it for the connection,
	// join_ref and connection id when it needs them.
	s.cfg.Presence.Track(ch.topic, ch, presence.Member{Version: s.v, Sub: s.Sub(), Params: ch.paramsJSON()})
}

// untrack ends an instance's presence; call it wherever the instance
// leaves the hub (idempotent, and a no-op for instances never tracked).
func (s *Session) untrack(ch *channel) {
	if s.cfg.Presence != nil {
		s.cfg.Presence.Untrack(ch.topic, ch)
	}
}

// parseResume reads the optional resume position from join params:
// {"epoch": "E", "offset": N} (N a JSON number or a decimal string).
// Params must be an object (or null); other keys are the app's.
func parseResume(payload []byte) (*broker.Position, bool) {
	p := bytes.TrimSpace(payload)
	if bytes.Equal(p, []byte("null")) {
		return nil, true
	}
	if len(p) == 0 || p[0] != '{' {
		return nil, false
	}
	var params struct {
		Epoch  *string         `json:"epoch"`
		Offset json.RawMessage `json:"offset"`
	}
	if err := json.Unmarshal(p, &params); err != nil {
		return nil, false
	}
	if params.Epoch == nil && params.Offset == nil {
		return nil, true
	}
	if params.Epoch == nil || *params.Epoch == "" || params.Offset == nil {
		return nil, false
	}
	raw := string(params.Offset)
	if len(raw) > 1 && raw[0] == '"' {
		raw = raw[1 : len(raw)-1]
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return nil, false
	}
	return &broker.Position{Epoch: *params.Epoch, Offset: n}, true
}

// joinResponse is the join reply's response: {} for an ephemeral topic;
// {"epoch","offset"} for a persistent one (the offset a decimal string,
// like every offset the server emits: a stream sequence is a uint64 and
// JavaScript numbers lose precision past 2^53), plus "recovered" (and "reason"
// when false) when the client asked to resume.
func joinResponse(r hub.JoinResult) []byte {
	if !r.Persistent {
		return nil
	}
	b := []byte(`{"epoch":`)
	b = strconv.AppendQuote(b, r.Head.Epoch)
	b = append(b, `,"offset":"`...)
	b = strconv.AppendUint(b, r.Head.Offset, 10)
	b = append(b, '"')
	if r.Resumed {
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, r.Recovered)
		if !r.Recovered {
			b = append(b, `,"reason":`...)
			b = strconv.AppendQuote(b, r.Reason)
		}
	}
	return append(b, '}')
}

func (s *Session) leave(f phoenix.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channel(f.Topic)
	if ch == nil {
		// Leaves are idempotent, including for joins never seen.
		s.reply(f.JoinRef, f.Ref, f.Topic, true, nil)
		return
	}
	if f.JoinRef.Valid && !ch.isJoinRef(f.JoinRef) {
		return // stale leave for an instance already replaced
	}
	// The instance's last frames: once Leave and untrack returned, the
	// hub and presence queue nothing more for it (docs/architecture.md,
	// "Who writes to a connection").
	s.forget(ch)
	ch.setGone()
	s.cfg.Hub.Leave(ch.topic, ch)
	s.untrack(ch)
	if ch.live {
		s.emitWith("leave", ch.topic, ch.assigns())
	}
	s.reply(f.JoinRef, f.Ref, f.Topic, true, nil)
	jr := ch.joinRef()
	s.send(phoenix.AppendMessage(nil, s.v, jr, jr, ch.topic, phoenix.EventClose, nil))
}
