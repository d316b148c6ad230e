// Package session is the Phoenix Channels state machine of one connection:
// heartbeats, phx_join / phx_leave, duplicate joins, pushes, and the replies
// phoenix.js expects, with the error reasons and reserved event names of
// docs/protocol.md.
//
// Concurrency: the transport calls HandleMessage from one goroutine at a
// time. A join that must wait for the broker (first member of a topic on
// this gateway) and a push that publishes run on their own short-lived
// goroutine and answer through Conn.Send, which is safe from anywhere;
// Session.mu orders them against later messages.
package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hooks"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Reasons sent in {"status":"error","response":{"reason":…}} replies. Part
// of the wire contract: clients match on them.
const (
	ReasonBadRequest     = "bad_request"
	ReasonUnmatchedTopic = "unmatched topic"
	ReasonInvalidTopic   = "invalid_topic"
	ReasonUnauthorized   = "unauthorized"
	ReasonTooManyJoined  = "too many channels joined"
	ReasonUnavailable    = "unavailable"
	ReasonPublishFailed  = "publish_failed"
	ReasonNoHandler      = "no_handler"
	ReasonTimeout        = "timeout"
	ReasonRateLimited    = "rate_limited"
	// ReasonReservedEvent: a push named like an event phoenix.js,
	// Phoenix.Presence or Fabric treat specially (phoenix.ReservedEvent).
	ReasonReservedEvent = "reserved_event"
	// ReasonInvalidEvent: a push event name that is empty, over 255
	// bytes, surrounded by spaces, or holds control characters or a lone
	// surrogate escape.
	ReasonInvalidEvent = "invalid_event"
	// ReasonTooLarge: the bus refused the payload as over its size cap.
	ReasonTooLarge = "too_large"
	// ReasonInvalidReply: the service handling a routed push answered
	// with JSON that is not an object (Phoenix replies are maps).
	ReasonInvalidReply = "invalid_reply"
	// ReasonTooManyJoinedByUser: the connection's user has MaxChannelsPerUser
	// channels joined across all its connections on this gateway.
	ReasonTooManyJoinedByUser = "too many channels joined by user"
)

// PushRefusals lists the reasons a push is answered with an error, in a
// fixed order (Stats.PushesRefused; the reason label of
// fabric_pushes_refused_total).
var PushRefusals = [...]string{ReasonUnmatchedTopic, ReasonRateLimited, ReasonUnauthorized, ReasonReservedEvent,
	ReasonInvalidEvent, ReasonTooLarge, ReasonPublishFailed, ReasonNoHandler, ReasonTimeout, ReasonUnavailable,
	ReasonInvalidReply}

// Join results, counted per gateway in Stats.Joins (and exported as the
// result label of fabric_joins_total). Every phx_join a session receives
// is counted exactly once, under the first of these that applies.
const (
	// JoinInvalid: malformed join params or resume position, or an
	// invalid topic (replied bad_request or invalid_topic).
	JoinInvalid = "invalid"
	// JoinRateLimited: over the join rate (replied rate_limited).
	JoinRateLimited = "rate_limited"
	// JoinUnauthorized: outside the connection's grants, with no valid
	// per-join token (replied unauthorized).
	JoinUnauthorized = "unauthorized"
	// JoinTooManyChannels: over MaxChannels (replied "too many channels
	// joined").
	JoinTooManyChannels = "too_many_channels"
	// JoinUserBudget: over the user's channel budget across its
	// connections (replied "too many channels joined by user").
	JoinUserBudget = "user_budget"
	// JoinCanceled: the client left, joined the topic again or
	// disconnected before the join was answered; nothing was replied.
	JoinCanceled = "canceled"
	// JoinError: the hub could not attach the member (broker subscription
	// or the first replay fetch failed, or JoinTimeout); replied
	// unavailable.
	JoinError = "error"
	// JoinOK: replied ok (a resume too, whatever its outcome).
	JoinOK = "ok"
	// JoinHookRefused: the namespace's join hook refused it, or could
	// not answer (no_handler, timeout...); replied with that reason.
	JoinHookRefused = "hook_refused"
)

// JoinResults lists every join result, in a fixed order.
var JoinResults = [...]string{JoinOK, JoinInvalid, JoinUnauthorized, JoinRateLimited, JoinTooManyChannels, JoinUserBudget, JoinError, JoinCanceled, JoinHookRefused}

// Stats is a snapshot of the counters shared by every session of a Config.
type Stats struct {
	// Joins counts join attempts by result (every JoinResults key is
	// present).
	Joins map[string]uint64
	// PushesRefused counts pushes answered with an error, by reason
	// (every PushRefusals key is present).
	PushesRefused map[string]uint64
	// PushesLimited counts pushes answered rate_limited, by the limit
	// they met: "count" (PushRate) or "bytes" (PushBytesRate).
	PushesLimited map[string]uint64
}

// counters are a Config's statistics; atomics because every session of a
// gateway updates them from its own goroutine.
type counters struct {
	joins   [len(JoinResults)]atomic.Uint64
	refused [len(PushRefusals)]atomic.Uint64
	// pushes refused by PushRate, PushBytesRate
	pushCounted, pushBytes atomic.Uint64
	// lastLog is monoNow() of the last refused-push log line, and
	// unlogged the refusals since that were not logged: bad pushes are
	// counted, and logged at a sampled rate (a client can send thousands
	// a second).
	lastLog  atomic.Int64
	unlogged atomic.Uint64
}

func (c *counters) refusedPush(reason string) {
	for i, r := range PushRefusals {
		if r == reason {
			c.refused[i].Add(1)
			return
		}
	}
}

func (c *counters) join(result string) {
	for i, r := range JoinResults {
		if r == result {
			c.joins[i].Add(1)
			return
		}
	}
}

// Stats returns a snapshot of the counters of every session sharing c.
func (c *Config) Stats() Stats {
	st := Stats{Joins: make(map[string]uint64, len(JoinResults)),
		PushesRefused: make(map[string]uint64, len(PushRefusals)),
		PushesLimited: map[string]uint64{"count": c.counters.pushCounted.Load(), "bytes": c.counters.pushBytes.Load()}}
	for i, r := range JoinResults {
		st.Joins[r] = c.counters.joins[i].Load()
	}
	for i, r := range PushRefusals {
		st.PushesRefused[r] = c.counters.refused[i].Load()
	}
	return st
}

// Policy decides what a connection may do. A nil Policy allows everything
// (anonymous development mode).
type Policy interface {
	CanJoin(topic string) bool
	CanPublish(topic string) bool
}

// ChannelBudget is implemented by policies that bound the channels of a
// user across its connections: AcquireChannel is asked before a channel
// instance is added (false refuses the join), ReleaseChannel once for
// every instance that goes.
type ChannelBudget interface {
	AcquireChannel() bool
	ReleaseChannel()
}

// JoinTokenPolicy is a Policy that also accepts per-join tokens: apps that
// authorize each join from their backend put a token naming the topic in
// the join params ({"token": "…"}).
type JoinTokenPolicy interface {
	Policy
	CanJoinWithToken(topic, token string) bool
}

// Config is shared by every session of a gateway.
type Config struct {
	Hub    *hub.Hub
	Broker broker.Broker
	// Namespaces is the namespace policy: which namespaces route their
	// pushes to services, and how long those may take (nil: none).
	Namespaces *namespace.Set
	// IDPrefix starts every connection id of this process (a random
	// prefix makes ids unique across a fleet in practice).
	IDPrefix string
	// MaxChannels caps the channels one connection may have joined
	// (default 100).
	MaxChannels int
	// JoinTimeout bounds a join that waits for the broker (default 5 s).
	JoinTimeout time.Duration
	// PublishTimeout bounds a client push's publish (default 5 s).
	PublishTimeout time.Duration
	// JoinRate and PushRate limit joins and pushes per connection per
	// second (token buckets of JoinBurst and PushBurst); 0: unlimited. Over
	// the limit a request gets {"reason":"rate_limited","retry_after_ms":N};
	// a connection that keeps going (more than ten bursts refused within
	// ten seconds) is closed with 4029.
	JoinRate, PushRate   float64
	JoinBurst, PushBurst int
	// PushBytesRate limits the payload bytes of a connection's pushes per
	// second (a token bucket of PushBytesBurst bytes, at least one
	// message's worth); 0: unlimited. Over it a push is answered like one
	// over PushRate. It also bounds what waits in a connection's push
	// queue to one burst, however slow the bus.
	PushBytesRate  float64
	PushBytesBurst int
	// Events, when set, takes connection lifecycle events (connect, join,
	// leave, disconnect). Its Emit must return at once, never waiting on
	// the bus: sessions emit on the transport's event loop and, from
	// Joined, under the hub's locks (an events.Queue does that).
	Events Emitter
	// Presence, when set, tracks members of presence-enabled namespaces
	// (presence_state after each join, presence_diff on changes).
	Presence *presence.Tracker
	// Hooks, when set, asks services about joins on namespaces with a
	// join hook (hooks.go).
	Hooks  *hooks.Hooks
	Logger *slog.Logger

	// counters change while the rest of Config stays fixed.
	counters counters
}

// SetDefaults fills zero fields; call it once, before the first New.
func (c *Config) SetDefaults() {
	if c.MaxChannels <= 0 {
		c.MaxChannels = 100
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 5 * time.Second
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Emitter takes lifecycle events; see Config.Events.
type Emitter interface {
	Emit(kind, topic string, body []byte)
}

// Session is one connection's Phoenix state. One exists per connection,
// so its fields are ordered to pack (152 bytes) and push state, which many
// connections never need, lives apart until the first push.
type Session struct {
	cfg    *Config
	conn   transport.Conn
	policy Policy

	idn     uint64    // connection number (see ID)
	sub     string    // authenticated user, "" when anonymous
	hook    *connHook // claims and assigns for hooks; nil without hooks
	onClose func()

	// rate limiting, touched only from HandleMessage (one goroutine at a time)
	joinBucket   bucket
	refusedSince int64 // monoNow()

	mu       sync.Mutex
	channels []*channel // current instance per topic (few: a slice beats a map's 200+ bytes)
	pushq    *pushQueue // allocated by the first push

	refused  int32 // rate limiting, like the buckets
	v        phoenix.Version
	textOnly bool // LongPoll: never send binary frames
	closed   bool // under mu
	warned   bool // under mu: a refused push of this connection was logged at Debug
}

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

// channel is one join instance. Its pointer is the hub membership key, so
// a duplicate join's new instance never shares a delivery path with the old.
type channel struct {
	s        *Session
	topic    string
	joinRef  phoenix.Ref
	ref      string      // the join message's ref, for the reply (with refValid, refRaw)
	params   string      // join params, forwarded with routed pushes ("" for none)
	hook     *chanHook   // the join hook's answer; nil when not asked
	joined   atomic.Bool // the ok reply went out and the hub delivers to it
	gone     atomic.Bool // left, replaced or disconnected: no reply any more
	counted  atomic.Bool // the join's result was counted (joinDone)
	refValid bool        // (one per joined channel of every connection: 104 bytes)
	refRaw   bool
}

// joinMsgRef is the ref of the join message.
func (ch *channel) joinMsgRef() phoenix.Ref {
	return phoenix.Ref{S: ch.ref, Valid: ch.refValid, Raw: ch.refRaw}
}

// paramsJSON is the join params as bytes, nil when empty.
func (ch *channel) paramsJSON() []byte {
	if ch.params == "" {
		return nil
	}
	return []byte(ch.params)
}

// joinDone counts the result of ch's join, once: the hub's Joined callback
// and the joining goroutine can both see an end of the same join.
func (s *Session) joinDone(ch *channel, result string) {
	if ch.counted.CompareAndSwap(false, true) {
		s.cfg.counters.join(result)
	}
}

var _ transport.Session = (*Session)(nil)

// New returns the session of conn, speaking version v. cfg (with defaults
// set) is shared by every session and must not change afterwards.
func New(cfg *Config, conn transport.Conn, v phoenix.Version, policy Policy) *Session {
	return &Session{cfg: cfg, conn: conn, v: v, policy: policy}
}

// SetIdentity numbers the connection (n unique per gateway process, > 0;
// its id is Config.IDPrefix + n in base 36) and names its authenticated
// user, and announces it on the bus (lifecycle events). Call it once,
// before the first message.
func (s *Session) SetIdentity(n uint64, sub string) {
	s.idn, s.sub = n, sub
	s.emit("connect", "")
}

// Sub is the connection's authenticated user ("" when anonymous).
func (s *Session) Sub() string { return s.sub }

// ID is the connection's id for routed pushes, presence and lifecycle
// events ("" before SetIdentity). Built when wanted rather than kept: one
// string fewer per connection.
func (s *Session) ID() string {
	if s.idn == 0 {
		return ""
	}
	return s.cfg.IDPrefix + strconv.FormatUint(s.idn, 36)
}

// OnClose registers fn to run once the connection is gone (admission
// bookkeeping).
func (s *Session) OnClose(fn func()) { s.onClose = fn }

// SetTextOnly marks a transport that cannot carry binary frames to the
// client (LongPoll): binary payloads then arrive as {"base64": …}.
func (s *Session) SetTextOnly() { s.textOnly = true }

// emit queues a lifecycle event (Config.Events). It runs on the event loop
// and under hub locks, so it must never reach the bus directly.
func (s *Session) emit(kind, topic string) { s.emitWith(kind, topic, s.connAssigns()) }

// emitWith emits an event carrying assigns (the hooks', or nil).
func (s *Session) emitWith(kind, topic string, assigns []byte) {
	ev := s.cfg.Events
	if ev == nil || s.idn == 0 {
		return
	}
	b, _ := json.Marshal(struct {
		Conn    string          `json:"conn"`
		Sub     string          `json:"sub,omitempty"`
		Topic   string          `json:"topic,omitempty"`
		At      int64           `json:"at"`
		Assigns json.RawMessage `json:"assigns,omitempty"`
	}{s.ID(), s.sub, topic, time.Now().UnixMilli(), assigns})
	ev.Emit(kind, topic, b)
}

// HandleMessage implements transport.Session.
func (s *Session) HandleMessage(binary bool, data []byte) {
	f, err := phoenix.Decode(s.v, binary, data)
	if err != nil {
		var pe *phoenix.ProtocolError
		var br *phoenix.BadRequestError
		switch {
		case errors.As(err, &br) && br.Field == phoenix.FieldTopic:
			// A name that cannot be decoded (a lone surrogate escape)
			// is no topic anyone can join; the reply names it as sent.
			if br.Event == phoenix.EventJoin {
				s.cfg.counters.join(JoinInvalid)
			}
			s.send(phoenix.AppendReplyJSONTopic(nil, s.v, br.JoinRef, br.Ref, br.TopicJSON, "error", reason(ReasonInvalidTopic)))
		case errors.As(err, &br) && br.Field == phoenix.FieldEvent:
			s.cfg.counters.refusedPush(ReasonInvalidEvent)
			s.reply(br.JoinRef, br.Ref, br.Topic, false, reason(ReasonInvalidEvent))
		case errors.As(err, &br):
			s.reply(br.JoinRef, br.Ref, br.Topic, false, reason(ReasonBadRequest))
		case errors.As(err, &pe):
			s.conn.Close(transport.CloseCode(pe.Code), pe.Reason)
		default:
			s.conn.Close(transport.CloseInvalidPayload, "undecodable message")
		}
		return
	}
	if f.Topic == phoenix.TopicPhoenix && f.Event == phoenix.EventHeartbeat {
		s.reply(f.JoinRef, f.Ref, f.Topic, true, nil)
		return
	}
	switch f.Event {
	case phoenix.EventJoin:
		s.join(f)
	case phoenix.EventLeave:
		s.leave(f)
	default:
		s.push(f)
	}
}

// HandleClose implements transport.Session: every membership goes.
func (s *Session) HandleClose(transport.CloseCode) {
	s.mu.Lock()
	s.closed = true
	chs := s.channels
	s.channels = nil
	s.mu.Unlock()
	for _, ch := range chs {
		s.releaseChannel()
		ch.gone.Store(true)
		s.cfg.Hub.Leave(ch.topic, ch)
		s.untrack(ch)
		if ch.joined.Load() {
			s.emitWith("leave", ch.topic, ch.assigns())
		}
	}
	s.emit("disconnect", "")
	if s.onClose != nil {
		s.onClose()
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
		old.gone.Store(true)
		s.cfg.Hub.Leave(old.topic, old)
		s.untrack(old)
		s.send(phoenix.AppendMessage(nil, s.v, old.joinRef, old.joinRef, old.topic, phoenix.EventClose, nil))
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
	ch := &channel{s: s, topic: s.cfg.Hub.Intern(f.Topic), joinRef: joinRef, ref: f.Ref.S, refValid: f.Ref.Valid, refRaw: f.Ref.Raw, params: joinParams(f.Payload)}
	s.channels = append(s.channels, ch)
	member := hub.Member{
		Conn:     s.conn,
		Version:  s.v,
		TextOnly: s.textOnly,
		Key:      ch, // a hub.Listener: Joined and Reset below
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
			// already answered; just undo the membership.
			if err == nil {
				s.cfg.Hub.Leave(ch.topic, ch)
				s.untrack(ch)
			}
			s.joinDone(ch, JoinCanceled) // unless Joined counted it
			return
		}
		if err != nil && !ch.joined.Load() {
			s.joinDone(ch, JoinError)
			s.forget(ch)
			if !errors.Is(err, broker.ErrUnavailable) {
				s.cfg.Logger.Warn("join failed", "topic", ch.topic, "err", err)
			}
			s.reply(ch.joinRef, ch.joinMsgRef(), ch.topic, false, reason(ReasonUnavailable))
		}
	}()
}

// Joined implements hub.Listener. The hub calls it under its channel
// lock, before any message: it must not take s.mu.
func (ch *channel) Joined(r hub.JoinResult) {
	s := ch.s
	if ch.gone.Load() {
		s.joinDone(ch, JoinCanceled)
		return // the client already left this instance
	}
	ch.joined.Store(true)
	s.joinDone(ch, JoinOK)
	s.reply(ch.joinRef, ch.joinMsgRef(), ch.topic, true, ch.hookResponse(joinResponse(r)))
	s.emitWith("join", ch.topic, ch.assigns())
	// Presence: after the reply, so presence_state follows it. Track
	// never calls into the hub (we hold its lock).
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

// releaseChannel gives a channel back to the user's budget.
func (s *Session) releaseChannel() {
	if b, ok := s.policy.(ChannelBudget); ok {
		b.ReleaseChannel()
	}
}

// reset ends a channel instance whose history could not continue: the
// client gets phx_error and rejoins (with its offset) by itself.
func (s *Session) reset(ch *channel) {
	s.mu.Lock()
	s.forget(ch)
	ch.gone.Store(true)
	s.mu.Unlock()
	s.untrack(ch)
	s.send(phoenix.AppendMessage(nil, s.v, ch.joinRef, ch.joinRef, ch.topic, phoenix.EventError, nil))
}

// track registers a joined instance with presence (when its namespace has
// it). Called from Joined, under the hub's channel lock.
func (s *Session) track(ch *channel) {
	if s.cfg.Presence == nil {
		return
	}
	s.cfg.Presence.Track(ch.topic, ch, presence.Member{Conn: s.conn, Version: s.v, JoinRef: ch.joinRef,
		Sub: s.sub, ConnID: s.ID(), Params: ch.paramsJSON()})
}

// untrack ends an instance's presence; call it wherever the instance
// leaves the hub (idempotent, and a no-op for instances never tracked).
func (s *Session) untrack(ch *channel) {
	if s.cfg.Presence != nil {
		s.cfg.Presence.Untrack(ch.topic, ch)
	}
}

// joinToken checks a per-join token in the join params.
func (s *Session) joinToken(f phoenix.Frame) bool {
	jp, ok := s.policy.(JoinTokenPolicy)
	if !ok {
		return false
	}
	var params struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(f.Payload, &params) != nil || params.Token == "" {
		return false
	}
	return jp.CanJoinWithToken(f.Topic, params.Token)
}

// bucket is a token bucket (HandleMessage goroutine only).
type bucket struct {
	tokens float64
	last   int64 // monoNow() of the last take; 0 = never
}

// clockBase anchors monoNow: durations since it come from the monotonic
// clock and fit in an int64, half the size of a time.Time per bucket.
var clockBase = time.Now()

func monoNow() int64 { return int64(time.Since(clockBase)) + 1 }

// limit takes one token or answers rate_limited; sustained abuse closes
// the connection with 4029.
func (s *Session) limit(b *bucket, rate float64, burst int, joinRef phoenix.Ref, f phoenix.Frame) bool {
	if rate <= 0 {
		return true
	}
	if burst < 1 {
		burst = 1
	}
	now := monoNow()
	if b.last == 0 {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+time.Duration(now-b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	resp := []byte(`{"reason":"rate_limited","retry_after_ms":`)
	resp = strconv.AppendInt(resp, max(1, wait.Milliseconds()), 10)
	s.reply(joinRef, f.Ref, f.Topic, false, append(resp, '}'))
	if time.Duration(now-s.refusedSince) > 10*time.Second {
		s.refused, s.refusedSince = 0, now
	}
	if s.refused++; int(s.refused) > 10*burst {
		s.cfg.Logger.Info("connection closed for sustained abuse", "remote", s.conn.RemoteAddr())
		// Replies already queued (a join's ok, the rate_limited
		// answers) go out first: the client is told what happened to
		// each request, as Phoenix's socket would before closing.
		if qc, ok := s.conn.(transport.QueuedCloser); ok {
			qc.CloseAfterQueued(transport.CloseRateLimited, "rate limited")
		} else {
			s.conn.Close(transport.CloseRateLimited, "rate limited")
		}
	}
	return false
}

// limitBytes takes n bytes from the push byte bucket or answers
// rate_limited like limit (sustained abuse closes the connection there).
func (s *Session) limitBytes(b *bucket, n int, f phoenix.Frame) bool {
	rate := s.cfg.PushBytesRate
	if rate <= 0 {
		return true
	}
	burst := float64(max(s.cfg.PushBytesBurst, 1))
	now := monoNow()
	if b.last == 0 {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+time.Duration(now-b.last).Seconds()*rate)
	}
	b.last = now
	// A push bigger than the burst passes on a full bucket (and leaves it
	// in debt), so that the limit never refuses a message for its size
	// alone: that is --max-message-size's job.
	if b.tokens >= float64(n) || b.tokens >= burst {
		b.tokens -= float64(n)
		return true
	}
	wait := time.Duration((min(float64(n), burst) - b.tokens) / rate * float64(time.Second))
	resp := []byte(`{"reason":"rate_limited","limit":"bytes","retry_after_ms":`)
	resp = strconv.AppendInt(resp, max(1, wait.Milliseconds()), 10)
	s.reply(f.JoinRef, f.Ref, f.Topic, false, append(resp, '}'))
	return false
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
	if f.JoinRef.Valid && f.JoinRef != ch.joinRef {
		return // stale leave for an instance already replaced
	}
	s.forget(ch)
	ch.gone.Store(true)
	s.cfg.Hub.Leave(ch.topic, ch)
	s.untrack(ch)
	s.emitWith("leave", ch.topic, ch.assigns())
	s.reply(f.JoinRef, f.Ref, f.Topic, true, nil)
	s.send(phoenix.AppendMessage(nil, s.v, ch.joinRef, ch.joinRef, ch.topic, phoenix.EventClose, nil))
}

func (s *Session) push(f phoenix.Frame) {
	s.mu.Lock()
	ch := s.channel(f.Topic)
	ok := ch != nil && ch.joined.Load() && (!f.JoinRef.Valid || f.JoinRef == ch.joinRef)
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
		broker.PushMeta{Subject: s.sub, ConnID: s.ID(), JoinParams: p.params, Assigns: p.assigns, Sent: p.at})
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

func (s *Session) reply(joinRef, ref phoenix.Ref, topic string, ok bool, response []byte) {
	status := "ok"
	if !ok {
		status = "error"
	}
	s.send(phoenix.AppendReply(nil, s.v, joinRef, ref, topic, status, response))
}

func (s *Session) send(b []byte) { s.conn.Send(transport.NewText(b)) }

func reason(r string) []byte {
	return append(append([]byte(`{"reason":`), quote(r)...), '}')
}

func quote(s string) []byte {
	// Reasons are fixed ASCII constants without quotes or backslashes.
	return append(append([]byte{'"'}, s...), '"')
}
