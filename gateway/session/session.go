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
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hooks"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
)

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
	// the bus: sessions emit on the transport's event loop, under the
	// session's lock (an events.Queue does that).
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
// so its fields are ordered to pack (128 bytes) and push state, which many
// connections never need, lives apart until the first push.
type Session struct {
	cfg    *Config
	conn   transport.Conn
	policy Policy

	idn     uint64    // connection number (see ID)
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

var _ transport.Session = (*Session)(nil)

// New returns the session of conn, speaking version v. cfg (with defaults
// set) is shared by every session and must not change afterwards.
func New(cfg *Config, conn transport.Conn, v phoenix.Version, policy Policy) *Session {
	return &Session{cfg: cfg, conn: conn, v: v, policy: policy}
}

// SetIdentity numbers the connection (n unique per gateway process, > 0;
// its id is Config.IDPrefix + n in base 36) and announces it on the bus
// (lifecycle events). Call it once, before the first message. The
// connection's user is its policy's (UserPolicy).
func (s *Session) SetIdentity(n uint64) {
	s.idn = n
	s.emit("connect", "")
}

// Sub is the connection's authenticated user: its policy's
// (UserPolicy), "" when anonymous. Asked rather than kept: the policy
// holds it anyway, and a copy cost every connection 16 bytes.
func (s *Session) Sub() string {
	if p, ok := s.policy.(UserPolicy); ok {
		return p.Sub()
	}
	return ""
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
	}{s.ID(), s.Sub(), topic, time.Now().UnixMilli(), assigns})
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
		ch.setGone()
		s.cfg.Hub.Leave(ch.topic, ch)
		s.untrack(ch)
		if ch.live {
			s.emitWith("leave", ch.topic, ch.assigns())
		}
	}
	s.emit("disconnect", "")
	if s.onClose != nil {
		s.onClose()
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
