package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
)

const (
	// One subscription feeds a whole channel (every local member), so it
	// gets far more room than nats.go's per-subscription defaults
	// (500k msgs / 64 MiB) before the client library starts dropping.
	pendingMsgsLimit  = 1_000_000
	pendingBytesLimit = 256 << 20

	// defaultRoundTrip bounds the flush round trip when the caller's context
	// has no deadline: nats.go refuses to flush without one.
	defaultRoundTrip = 10 * time.Second

	// slowLogEvery rate-limits the slow-consumer warning per subscription;
	// during an overload every callback would otherwise log.
	slowLogEvery = 5 * time.Second
)

// ErrInvalidEvent is returned by Publish for an event name that subscribers
// would have to drop.
var ErrInvalidEvent = errors.New("natsbroker: invalid event")

// Config configures a Broker.
type Config struct {
	Prefix string       // subject prefix, default "fabric"
	Logger *slog.Logger // nil discards
	// Client-side buffer before nats.go starts dropping (slow consumer).
	// PendingMsgsLimit bounds each dispatch shard's queue of channel
	// messages (shards.go; at most 32,768, the default), and with
	// PendingBytesLimit the presence bus subscription of a namespace.
	// 0 means 1,000,000 messages / 256 MiB for the latter; negative means
	// unlimited there and the largest shard queue.
	PendingMsgsLimit  int
	PendingBytesLimit int
	// Streams are the persistent namespaces' stream settings, by
	// namespace (JetStream history); any other namespace is ephemeral.
	// Call EnsureStreams before use. Which namespaces keep history, route
	// pushes or track presence is the gateway's namespace policy; the
	// adapter only runs the streams.
	Streams map[string]Stream
	// PresenceTTL is the presence_ttl of each namespace that tracks
	// presence: the presence bus keeps assuming another gateway it heard
	// for twice that plus a second (presence.go). A namespace not listed:
	// 15 s, the namespace policy's default.
	PresenceTTL map[string]time.Duration
	// Domain is the JetStream domain the streams live in, reached as
	// $JS.<domain>.API: another region's across a leaf-node link
	// (docs/regions.md). Empty: the connected server's own JetStream.
	Domain string
}

// Broker implements broker.Broker on a nats.go connection. It never changes
// the connection's options or handlers; the caller owns the connection
// (reconnect policy, error handlers, Close).
type Broker struct {
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	link   Link // nil: never known to be away (SetLink)

	pendingMsgs, pendingBytes int

	js         jetstream.JetStream
	jsAPI      string              // JetStream API prefix: $JS.API or $JS.<domain>.API
	livePrefix string              // republish destination prefix: <prefix>_live
	namespaces map[string]*nsState // persistent namespaces only
	advOnce    sync.Once
	advSub     *nats.Subscription
	markSubs   []*nats.Subscription // republished moderation marks, one per namespace
	standalone bool                 // NewModerator: streams found by name

	liveMu sync.Mutex
	live   map[*liveSub]struct{}

	presInbox presenceInbox // answers to presence state requests
	presMu    sync.Mutex
	presBus   map[string]*presenceBus  // by namespace (presence.go)
	presTTL   map[string]time.Duration // Config.PresenceTTL
	presID    string                   // this broker on the presence bus
	presHdr   nats.Header              // {wire.HeaderPresenceFrom: presID}; never written after New
	disp      *dispatcher              // channel subscriptions (shards.go)

	stop      chan struct{}
	closeOnce sync.Once

	dropped   atomic.Uint64 // messages refused for their event name
	slowDrops atomic.Uint64 // messages nats.go dropped on our subscriptions
}

var _ broker.Broker = (*Broker)(nil)

// New returns a Broker publishing and subscribing on nc.
func New(nc *nats.Conn, cfg Config) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("natsbroker: nil connection")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = wire.DefaultPrefix
	}
	if err := subject.ValidPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PendingMsgsLimit == 0 {
		cfg.PendingMsgsLimit = pendingMsgsLimit
	}
	if cfg.PendingBytesLimit == 0 {
		cfg.PendingBytesLimit = pendingBytesLimit
	}
	if err := validateStreams(cfg.Streams); err != nil {
		return nil, err
	}
	js, jsAPI, err := newJetStream(nc, cfg.Domain)
	if err != nil {
		return nil, err
	}
	b := &Broker{nc: nc, prefix: cfg.Prefix, log: cfg.Logger, jsAPI: jsAPI,
		pendingMsgs: cfg.PendingMsgsLimit, pendingBytes: cfg.PendingBytesLimit,
		js: js, livePrefix: cfg.Prefix + "_live", namespaces: map[string]*nsState{},
		live: map[*liveSub]struct{}{}, stop: make(chan struct{})}
	queue := shardQueue
	if cfg.PendingMsgsLimit > 0 {
		queue = min(queue, cfg.PendingMsgsLimit)
	}
	b.disp = newDispatcher(nc, queue)
	b.presBus = map[string]*presenceBus{}
	b.presTTL = maps.Clone(cfg.PresenceTTL)
	b.presID = nats.NewInbox()[len(nats.InboxPrefix):]
	b.presHdr = nats.Header{wire.HeaderPresenceFrom: {b.presID}}
	for name, st := range cfg.Streams {
		n := &nsState{name: name, stream: wire.StreamName(name), cfg: st}
		n.live.setMode(st.Live)
		b.namespaces[name] = n
	}
	if len(b.namespaces) > 0 {
		// Only persistent channels can be caught up after an outage.
		go b.watchDrops()
		go b.watchReconnects(b.nc.StatusChanged(nats.CONNECTED))
	}
	return b, nil
}

// newJetStream is the JetStream API of domain ("": the connected
// server's own) and its subject prefix, for the requests nats.go has no
// call for (batched Direct Get).
func newJetStream(nc *nats.Conn, domain string) (jetstream.JetStream, string, error) {
	if domain == "" {
		js, err := jetstream.New(nc)
		return js, "$JS.API", err
	}
	if !streamName.MatchString(domain) {
		return nil, "", fmt.Errorf("natsbroker: bad JetStream domain %q", domain)
	}
	js, err := jetstream.NewWithDomain(nc, domain)
	return js, "$JS." + domain + ".API", err
}

// Close stops the broker's background work (it does not close the NATS
// connection, which belongs to the caller).
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		close(b.stop)
		if b.advSub != nil {
			b.advSub.Unsubscribe()
		}
		for _, sub := range b.markSubs {
			_ = sub.Unsubscribe() // the connection may be closed already
		}
		b.presInbox.close()
		b.closePresence()
		b.closeWildcards()
	})
}

// Dropped is the number of received messages dropped because their event
// name cannot be delivered (empty, too long, reserved, control characters).
func (b *Broker) Dropped() uint64 { return b.dropped.Load() }

// SlowConsumerDrops is the number of messages nats.go discarded because a
// subscription's handler fell behind its pending limits. Those messages are
// lost to every member of the channel.
func (b *Broker) SlowConsumerDrops() uint64 { return b.slowDrops.Load() }

// topicError keeps the subject package's reason in the message while
// matching both broker.ErrInvalidTopic and subject.ErrInvalidTopic.
type topicError struct{ cause *subject.Error }

func (e *topicError) Error() string {
	return broker.ErrInvalidTopic.Error() + ": " + e.cause.Reason
}

func (e *topicError) Unwrap() []error { return []error{broker.ErrInvalidTopic, e.cause} }

func (b *Broker) subject(topic string) (string, error) {
	s, err := subject.Map(b.prefix, topic)
	if err != nil {
		var se *subject.Error
		if errors.As(err, &se) && se.Kind == subject.ErrInvalidTopic {
			return "", &topicError{cause: se}
		}
		return "", err
	}
	return s, nil
}

// ValidateTopic reports an error wrapping broker.ErrInvalidTopic for a topic
// that can never be subscribed or published to.
func (b *Broker) ValidateTopic(topic string) error {
	_, err := b.subject(topic)
	return err
}

// roundTrip waits until the server has processed everything sent so far on
// the connection (PING/PONG), which is what makes Subscribe and Publish
// return only once the server registered the interest or took the message.
func (b *Broker) roundTrip(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRoundTrip)
		defer cancel()
	}
	return b.nc.FlushWithContext(ctx)
}

// Subscribe subscribes to topic and returns once the server has registered
// the interest. h is called for one subscription at a time, in order, on a
// dispatch goroutine that serves other subscriptions too (shards.go): it
// must not block.
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler) (broker.Subscription, error) {
	if h == nil {
		return nil, errors.New("natsbroker: nil handler")
	}
	subj, err := b.subject(topic)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.Available(topic); err != nil {
		return nil, err
	}
	if n := b.namespaceOf(topic); n != nil {
		return b.subscribeLive(ctx, n, topic, subj, h)
	}
	s := &subscription{b: b, topic: topic, h: h}
	if err := b.subscribe(ctx, &s.guarded, subj, s.deliver); err != nil {
		return nil, err
	}
	return s, nil
}

// subscription is an ephemeral topic's core subscription.
type subscription struct {
	guarded
	b     *Broker
	topic string
	h     broker.Handler

	seenDrops int       // nats.go's drop count already accounted for
	lastWarn  time.Time // last slow-consumer warning
}

func (s *subscription) deliver(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.checkDrops()
	msg, ok := s.b.convert(s.topic, m)
	if !ok {
		return
	}
	s.h(msg)
}

// checkDrops turns nats.go's per-subscription drop counter into a warning.
// Polling it here, rather than installing an async error handler, leaves the
// caller's handlers on the connection untouched; right after an overflow
// the pending queue is full, so the next callback comes immediately.
func (s *subscription) checkDrops() {
	n, err := s.sub.Dropped()
	if err != nil || n <= s.seenDrops {
		return
	}
	delta := n - s.seenDrops
	s.seenDrops = n
	s.b.slowDrops.Add(uint64(delta))
	if now := time.Now(); now.Sub(s.lastWarn) >= slowLogEvery {
		s.lastWarn = now
		s.b.log.Warn("natsbroker: slow consumer, messages dropped",
			slog.String("subject", s.sub.Subject), slog.Int("dropped", delta), slog.Int("dropped_total", n))
	}
}

// Unsubscribe implements broker.Subscription (see guarded.unsubscribe).
func (s *subscription) Unsubscribe() error { return s.unsubscribe() }

// convert turns a NATS message into a broker message, or reports false when
// it has to be dropped.
func (b *Broker) convert(topic string, m *nats.Msg) (*broker.Message, bool) {
	event := wire.DefaultEvent
	if v, ok := headerValue(m.Header, wire.HeaderEvent); ok {
		event = strings.TrimSpace(v)
		if !validEvent(event) {
			b.dropped.Add(1)
			b.log.Warn("natsbroker: message dropped, unusable event name",
				slog.String("subject", m.Subject), slog.Int("event_len", len(v)))
			return nil, false
		}
	}
	msg := &broker.Message{Topic: topic, Event: event, Payload: m.Data, Published: publishedAt(m.Header)}
	ct, hasCT := headerValue(m.Header, wire.HeaderContentType)
	switch {
	case hasCT && !isJSONType(ct):
		msg.Binary = true
	case len(m.Data) == 0:
		// Phoenix payloads are JSON values; an empty body (a bare
		// `nats pub subj ""`) is the empty object, not an empty binary frame.
		msg.Payload = []byte("{}")
	default:
		msg.Binary = !isJSON(m.Data)
	}
	return msg, true
}

// publishedAt is when m was published: Fabric-Time when present (the
// publisher's clock, at the publish call), else Nats-Time-Stamp (the
// server's clock, when the stream stored it). Zero when neither parses:
// such a message is not measured. Exact-case lookups keep this cheap for
// the common message that has neither header.
func publishedAt(h nats.Header) time.Time {
	if v := h[wire.HeaderTime]; len(v) > 0 {
		if ns, err := strconv.ParseInt(v[0], 10, 64); err == nil && ns > 0 {
			return time.Unix(0, ns)
		}
	}
	if v := h[wire.HeaderStored]; len(v) > 0 {
		if t, err := time.Parse(time.RFC3339Nano, v[0]); err == nil {
			return t
		}
	}
	return time.Time{}
}

// headerValue looks key up exactly first (nats.go headers are
// case-sensitive) and then case-insensitively, so `nats pub -H
// fabric-event:x` works like the canonical spelling.
func headerValue(h nats.Header, key string) (string, bool) {
	if h == nil {
		return "", false
	}
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0], true
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0], true
		}
	}
	return "", false
}

func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// isJSON decides text versus binary frame. encoding/json accepts invalid
// UTF-8 inside strings, but a WebSocket text frame must be valid UTF-8.
func isJSON(p []byte) bool { return utf8.Valid(p) && json.Valid(p) }

// validEvent: see subject.ValidEvent (shared with the publisher library).
func validEvent(e string) bool { return subject.ValidEvent(e) }

// Publish sends payload as event on topic and returns once the server has
// processed the message (not once subscribers got it: core NATS has no
// delivery acknowledgement).
func (b *Broker) Publish(ctx context.Context, topic, event string, payload []byte) (uint64, error) {
	subj, err := b.subject(topic)
	if err != nil {
		return 0, err
	}
	// A header value with CR/LF would corrupt the header block on the wire,
	// and a name subscribers drop would vanish silently.
	if event != strings.TrimSpace(event) || !validEvent(event) {
		return 0, ErrInvalidEvent
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.Available(topic); err != nil {
		return 0, err
	}
	m := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{wire.HeaderEvent: []string{event}}}
	if b.namespaceOf(topic) != nil {
		// Persistent: acknowledged only once stored. The message id
		// makes nats.go's retries (no responders during an election)
		// idempotent within the stream's duplicate window.
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, defaultRoundTrip)
			defer cancel()
		}
		ack, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(nats.NewInbox()[len(nats.InboxPrefix):]))
		if err != nil {
			return 0, tooLarge(err)
		}
		return ack.Sequence, nil
	}
	// Core NATS adds no timestamp; stamp it for the fan-out latency of
	// every gateway that delivers it (JetStream stamps stored ones).
	m.Header[wire.HeaderTime] = []string{strconv.FormatInt(time.Now().UnixNano(), 10)}
	if err := b.nc.PublishMsg(m); err != nil {
		return 0, tooLarge(err)
	}
	return 0, b.roundTrip(ctx)
}

// tooLarge wraps broker.ErrTooLarge around a publish error that says the
// payload is over a limit: the server's max_payload (nats.go checks it
// before sending) or the stream's max_msg_size.
func tooLarge(err error) error {
	var apiErr *jetstream.APIError
	if errors.Is(err, nats.ErrMaxPayload) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10054) { // JSStreamMessageExceedsMaximumErr
		return fmt.Errorf("%w: %w", broker.ErrTooLarge, err)
	}
	return err
}
