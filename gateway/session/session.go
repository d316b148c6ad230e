// Package session is the Phoenix Channels state machine of one connection:
// heartbeats, phx_join / phx_leave, duplicate joins, pushes, and the replies
// phoenix.js expects (../../../shared/docs/phoenix-protocol.md §3–§5, §13).
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

	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/broker"
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
)

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
	// JoinCanceled: the client left, joined the topic again or
	// disconnected before the join was answered; nothing was replied.
	JoinCanceled = "canceled"
	// JoinError: the hub could not attach the member (broker subscription
	// or the first replay fetch failed, or JoinTimeout); replied
	// unavailable.
	JoinError = "error"
	// JoinOK: replied ok (a resume too, whatever its outcome).
	JoinOK = "ok"
)

// JoinResults lists every join result, in a fixed order.
var JoinResults = [...]string{JoinOK, JoinInvalid, JoinUnauthorized, JoinRateLimited, JoinTooManyChannels, JoinError, JoinCanceled}

// Stats is a snapshot of the counters shared by every session of a Config.
type Stats struct {
	// Joins counts join attempts by result (every JoinResults key is
	// present).
	Joins map[string]uint64
}

// counters are a Config's statistics; atomics because every session of a
// gateway updates them from its own goroutine.
type counters struct {
	joins [len(JoinResults)]atomic.Uint64
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
	st := Stats{Joins: make(map[string]uint64, len(JoinResults))}
	for i, r := range JoinResults {
		st.Joins[r] = c.counters.joins[i].Load()
	}
	return st
}

// Policy decides what a connection may do. A nil Policy allows everything
// (anonymous development mode).
type Policy interface {
	CanJoin(topic string) bool
	CanPublish(topic string) bool
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
	// Presence, when set, tracks members of presence-enabled namespaces
	// (presence_state after each join, presence_diff on changes).
	Presence *presence.Tracker
	Logger   *slog.Logger

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

// Session is one connection's Phoenix state. One exists per connection,
// so its fields are ordered to pack (160 bytes) and push state, which many
// connections never need, lives apart until the first push.
type Session struct {
	cfg    *Config
	conn   transport.Conn
	policy Policy

	idn     uint64 // connection number (see ID)
	sub     string // authenticated user, "" when anonymous
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
}

// pushQueue is a connection's client pushes.
type pushQueue struct {
	bucket  bucket // HandleMessage goroutine only
	pending []push // under Session.mu: waiting to be published, in arrival order
	running bool   // under Session.mu: a goroutine is draining pending
}

type push struct {
	f       phoenix.Frame
	payload []byte
	params  []byte // the channel's join params
}

// channel is one join instance. Its pointer is the hub membership key, so
// a duplicate join's new instance never shares a delivery path with the old.
type channel struct {
	s        *Session
	topic    string
	joinRef  phoenix.Ref
	ref      string      // the join message's ref, for the reply (with refValid)
	params   string      // join params, forwarded with routed pushes ("" for none)
	joined   atomic.Bool // the ok reply went out and the hub delivers to it
	gone     atomic.Bool // left, replaced or disconnected: no reply any more
	counted  atomic.Bool // the join's result was counted (joinDone)
	refValid bool        // (one per joined channel of every connection: 96 bytes)
}

// joinMsgRef is the ref of the join message.
func (ch *channel) joinMsgRef() phoenix.Ref { return phoenix.Ref{S: ch.ref, Valid: ch.refValid} }

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

// emit publishes a lifecycle event when the broker supports it.
func (s *Session) emit(kind, topic string) {
	ev, ok := s.cfg.Broker.(broker.Events)
	if !ok || s.idn == 0 {
		return
	}
	b, _ := json.Marshal(struct {
		Conn  string `json:"conn"`
		Sub   string `json:"sub,omitempty"`
		Topic string `json:"topic,omitempty"`
		At    int64  `json:"at"`
	}{s.ID(), s.sub, topic, time.Now().UnixMilli()})
	ev.Emit(kind, topic, b)
}

// HandleMessage implements transport.Session.
func (s *Session) HandleMessage(binary bool, data []byte) {
	f, err := phoenix.Decode(s.v, binary, data)
	if err != nil {
		var pe *phoenix.ProtocolError
		var br *phoenix.BadRequestError
		switch {
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
		ch.gone.Store(true)
		s.cfg.Hub.Leave(ch.topic, ch)
		s.untrack(ch)
		if ch.joined.Load() {
			s.emit("leave", ch.topic)
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
	if s.policy != nil && !s.policy.CanJoin(f.Topic) && !s.joinToken(f) {
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
	ch := &channel{s: s, topic: s.cfg.Hub.Intern(f.Topic), joinRef: joinRef, ref: f.Ref.S, refValid: f.Ref.Valid, params: joinParams(f.Payload)}
	s.channels = append(s.channels, ch)
	member := hub.Member{
		Conn:     s.conn,
		Version:  s.v,
		TextOnly: s.textOnly,
		Key:      ch, // a hub.Listener: Joined and Reset below
		Resume:   resume,
	}
	if s.cfg.Hub.TryJoin(f.Topic, member) {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.JoinTimeout)
		err := s.cfg.Hub.Join(ctx, ch.topic, member)
		cancel()
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
			s.cfg.Logger.Warn("join failed", "topic", ch.topic, "err", err)
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
	s.reply(ch.joinRef, ch.joinMsgRef(), ch.topic, true, joinResponse(r))
	s.emit("join", ch.topic)
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
		s.conn.Close(transport.CloseRateLimited, "rate limited")
	}
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
// {"epoch","offset"} for a persistent one, plus "recovered" (and "reason"
// when false) when the client asked to resume.
func joinResponse(r hub.JoinResult) []byte {
	if !r.Persistent {
		return nil
	}
	b := []byte(`{"epoch":`)
	b = strconv.AppendQuote(b, r.Head.Epoch)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, r.Head.Offset, 10)
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
	s.emit("leave", ch.topic)
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
		s.reply(phoenix.Null, f.Ref, f.Topic, false, reason(ReasonUnmatchedTopic))
		return
	}
	if s.pushq == nil {
		s.mu.Lock() // publishPushes reads the pointer under mu
		s.pushq = new(pushQueue)
		s.mu.Unlock()
	}
	if !s.limit(&s.pushq.bucket, s.cfg.PushRate, s.cfg.PushBurst, f.JoinRef, f) {
		return
	}
	if s.policy != nil && !s.policy.CanPublish(f.Topic) {
		s.reply(f.JoinRef, f.Ref, f.Topic, false, reason(ReasonUnauthorized))
		return
	}
	// One goroutine at a time publishes this connection's pushes, so they
	// reach the bus in the order the client sent them.
	p := push{f: f, payload: append([]byte(nil), f.Payload...), params: ch.paramsJSON()} // f.Payload lives in the read buffer
	s.mu.Lock()
	q := s.pushq
	q.pending = append(q.pending, p)
	start := !q.running
	q.running = true
	s.mu.Unlock()
	if start {
		go s.publishPushes()
	}
}

func (s *Session) publishPushes() {
	for {
		s.mu.Lock()
		q := s.pushq
		if len(q.pending) == 0 || s.closed {
			q.pending = nil
			q.running = false
			s.mu.Unlock()
			return
		}
		p := q.pending[0]
		q.pending[0] = push{}
		q.pending = q.pending[1:]
		s.mu.Unlock()
		f := p.f
		if h, ok := s.cfg.Broker.(broker.Handlers); ok && h.RoutesPushes(f.Topic) {
			s.requestPush(h, p)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
		offset, err := s.cfg.Broker.Publish(ctx, f.Topic, f.Event, p.payload)
		cancel()
		if err != nil {
			s.cfg.Logger.Warn("push publish failed", "topic", f.Topic, "err", err)
			s.reply(f.JoinRef, f.Ref, f.Topic, false, reason(ReasonPublishFailed))
			continue
		}
		// Acked once the bus took it; in a persistent namespace once it
		// is stored, with its offset.
		var resp []byte
		if offset != 0 {
			resp = strconv.AppendUint([]byte(`{"offset":`), offset, 10)
			resp = append(resp, '}')
		}
		s.reply(f.JoinRef, f.Ref, f.Topic, true, resp)
	}
}

// requestPush hands a push to the service handling its namespace and
// relays the answer: Phoenix's handle_in over NATS.
func (s *Session) requestPush(h broker.Handlers, p push) {
	f := p.f
	r, err := h.Request(context.Background(), f.Topic, f.Event, p.payload,
		broker.PushMeta{Subject: s.sub, ConnID: s.ID(), JoinParams: p.params})
	switch {
	case errors.Is(err, broker.ErrNoHandler):
		s.reply(f.JoinRef, f.Ref, f.Topic, false, reason(ReasonNoHandler))
	case errors.Is(err, context.DeadlineExceeded):
		s.reply(f.JoinRef, f.Ref, f.Topic, false, reason(ReasonTimeout))
	case err != nil:
		s.cfg.Logger.Warn("routed push failed", "topic", f.Topic, "err", err)
		s.reply(f.JoinRef, f.Ref, f.Topic, false, reason(ReasonUnavailable))
	default:
		s.reply(f.JoinRef, f.Ref, f.Topic, r.OK, r.Response)
	}
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
