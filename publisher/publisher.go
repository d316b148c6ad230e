package publisher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
)

const (
	// DefaultTimeout bounds one Publish (every retry included) when
	// Config.Timeout is 0.
	DefaultTimeout = 2 * time.Second
	// DefaultRetries is how often a JetStream publish that found no stream
	// listening (a leader election) is retried when Config.Retries is 0.
	DefaultRetries = 2
	// Limits on WithHeader, so a request cannot smuggle a huge header
	// block past the payload limit's intent.
	maxHeaders     = 32
	maxHeaderName  = 128
	maxHeaderValue = 4096
	maxIdemKey     = 256

	// ephemeralTTL is how long "no stream captures this namespace" is
	// believed before the server is asked again, so a namespace made
	// persistent later is noticed without a restart.
	ephemeralTTL = 30 * time.Second
	// epochTTL is how long a stream's epoch is trusted without asking
	// again. Advisories normally invalidate it at once, but they are
	// at-most-once (a reconnect loses them); like the gateway, which
	// re-reads epochs every 5 s, the publisher never trusts one for long.
	epochTTL = 5 * time.Second
)

// The wire contract, kept here for code written against earlier versions
// of this library: a plain NATS client that publishes to Fabric needs the
// header names, and a Config the default prefix.
const (
	// Deprecated: use wire.DefaultPrefix.
	DefaultPrefix = wire.DefaultPrefix
	// Deprecated: use wire.DefaultEvent.
	DefaultEvent = wire.DefaultEvent
	// Deprecated: use wire.MaxEventLen.
	MaxEventLen = wire.MaxEventLen
	// Deprecated: use wire.HeaderEvent.
	HeaderEvent = wire.HeaderEvent
	// Deprecated: use wire.HeaderTime.
	HeaderTime = wire.HeaderTime
	// Deprecated: use wire.HeaderContentType.
	HeaderContentType = wire.HeaderContentType
)

var (
	// ErrInvalidTopic is wrapped by errors about the topic (and matches
	// subject.ErrInvalidTopic too).
	ErrInvalidTopic = errors.New("publisher: invalid topic")
	// ErrInvalidEvent: empty after defaulting, over 255 bytes, invalid
	// UTF-8, control characters, surrounding spaces, or reserved ("phx_…"
	// and "fabric:…" are the channel's and the gateway's own events).
	ErrInvalidEvent = errors.New("publisher: invalid event")
	// ErrInvalidOption is wrapped by errors about a header, content type or
	// idempotency key.
	ErrInvalidOption = errors.New("publisher: invalid option")
	// ErrTooLarge: the message is larger than the server or stream accepts.
	ErrTooLarge = errors.New("publisher: message too large")
	// ErrUnavailable is wrapped by every failure to get the message
	// accepted: NATS disconnected, no JetStream ack within the timeout, no
	// stream listening, the stream refusing it. The message may or may not
	// have been stored; retry with the same idempotency key to be sure it
	// is stored exactly once.
	ErrUnavailable = errors.New("publisher: unavailable")
)

// Config configures a Publisher. The zero value works against a default
// Fabric.
type Config struct {
	// Prefix is the subject prefix, the gateway's --subject-prefix
	// (default "fabric").
	Prefix string
	// Persistent, when set, decides which topics are persistent instead
	// of asking the server. Persistent topics are published with JetStream
	// and fail unless a stream stores them.
	Persistent func(topic string) bool
	// Timeout bounds one Publish, retries included (default 2s). A
	// persistent publish not acknowledged within it fails with
	// ErrUnavailable.
	Timeout time.Duration
	// Retries is how often a JetStream publish is retried when no stream
	// answers (a leader election), 250ms apart (default 2; negative: none).
	Retries int
	// Domain is the JetStream domain the streams live in, for a service
	// in another region than the namespace's home (docs/regions.md).
	// Empty: the connected server's own JetStream.
	Domain string
}

// Result is the outcome of one stored or sent message.
type Result struct {
	// Epoch names the stream's incarnation; "" for ephemeral topics (and
	// for a stream Fabric has not yet stamped with an epoch).
	Epoch string
	// Offset is the stream sequence clients receive with the message; 0
	// for ephemeral topics.
	Offset uint64
	// Duplicate is true when the idempotency key was already stored within
	// the duplicate window: nothing new was stored and Offset is the
	// original message's.
	Duplicate bool
}

// Publisher publishes messages to Fabric channels over a NATS connection.
// It is safe for concurrent use.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	prefix  string
	persist func(string) bool
	timeout time.Duration
	retries int
	advSub  *nats.Subscription

	// live is canceled when the connection goes down, so a publish
	// waiting for its ack fails at once instead of at the timeout; a new
	// one replaces it on reconnect.
	statusCh chan nats.Status
	liveMu   sync.Mutex
	live     context.Context
	liveStop context.CancelCauseFunc

	mu      sync.Mutex
	nss     map[string]nsEntry    // namespace → what the server said
	epochs  map[string]epochEntry // stream → epoch
	nowFunc func() time.Time
}

// nsEntry is the cached persistence of a namespace.
type nsEntry struct {
	stream  string    // "" when no stream captures the namespace
	expires time.Time // for stream == "" only
}

type epochEntry struct {
	epoch   string
	expires time.Time
}

// New returns a Publisher on nc. The connection stays the caller's (its
// options, handlers and Close).
func New(nc *nats.Conn, cfg Config) (*Publisher, error) {
	if nc == nil {
		return nil, errors.New("publisher: nil connection")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = wire.DefaultPrefix
	}
	if err := subject.ValidPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("publisher: negative timeout")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	var js jetstream.JetStream
	var err error
	if cfg.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return nil, err
	}
	p := &Publisher{nc: nc, js: js, prefix: cfg.Prefix, persist: cfg.Persistent,
		timeout: cfg.Timeout, retries: cfg.Retries,
		nss: map[string]nsEntry{}, epochs: map[string]epochEntry{}, nowFunc: time.Now}
	// Stream lifecycle advisories keep the caches honest: a recreated or
	// restored stream has a new epoch, a new stream may make a namespace
	// persistent. Without permission for them the caches only change on
	// Refresh, which is still correct for streams that are never recreated.
	if sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.*.*", p.onAdvisory); err == nil {
		p.advSub = sub
	}
	// Listen first, then look: a change in between is not missed.
	p.statusCh = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	p.live, p.liveStop = context.WithCancelCause(context.Background())
	if nc.Status() != nats.CONNECTED {
		p.liveStop(errConnectionLost)
	}
	go p.watchStatus(p.statusCh)
	return p, nil
}

var errConnectionLost = errors.New("NATS connection lost")

func (p *Publisher) watchStatus(ch chan nats.Status) {
	for st := range ch {
		p.liveMu.Lock()
		if st == nats.CONNECTED {
			if p.live.Err() != nil {
				p.live, p.liveStop = context.WithCancelCause(context.Background())
				// Advisories sent while we were away are lost.
				p.mu.Lock()
				p.epochs = map[string]epochEntry{}
				p.mu.Unlock()
			}
		} else {
			p.liveStop(errConnectionLost)
		}
		p.liveMu.Unlock()
	}
}

// liveCtx is done once the connection is lost.
func (p *Publisher) liveCtx() context.Context {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	return p.live
}

// Close stops watching stream advisories and the connection's status. It
// does not close the connection.
func (p *Publisher) Close() {
	if p.advSub != nil {
		p.advSub.Unsubscribe()
	}
	p.nc.RemoveStatusListener(p.statusCh)
}

// Refresh forgets what the Publisher learned from the server (which
// namespaces are persistent, stream epochs), for use after an operator
// changed the namespace configuration or restored a stream while
// advisories could not be received.
func (p *Publisher) Refresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nss = map[string]nsEntry{}
	p.epochs = map[string]epochEntry{}
}

func (p *Publisher) onAdvisory(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, "$JS.EVENT.ADVISORY.STREAM.")
	kind, stream, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.epochs, stream)
	if kind == "CREATED" {
		// A namespace believed ephemeral may have just become persistent.
		for ns, e := range p.nss {
			if e.stream == "" {
				delete(p.nss, ns)
			}
		}
	}
}

// Option adjusts one message.
type Option func(*options) error

type options struct {
	idemKey     string
	contentType string
	headers     nats.Header
}

// WithIdempotencyKey makes the publish safe to retry: the same key on the
// same persistent namespace within the stream's duplicate window (two
// minutes) is stored once, and the retry gets the original offset with
// Duplicate set. It is sent as the Nats-Msg-Id header. Ephemeral topics do
// not deduplicate.
func WithIdempotencyKey(k string) Option {
	return func(o *options) error {
		if k == "" || len(k) > maxIdemKey || !printable(k) {
			return fmt.Errorf("%w: idempotency key must be 1-%d printable ASCII characters", ErrInvalidOption, maxIdemKey)
		}
		o.idemKey = k
		return nil
	}
}

// WithContentType sets the Content-Type header. "application/json" (with
// or without parameters) keeps JSON payloads in text frames; any other
// type makes the gateway send a binary frame.
func WithContentType(ct string) Option {
	return func(o *options) error {
		if ct == "" {
			return nil
		}
		if len(ct) > maxHeaderValue || !printable(ct) {
			return fmt.Errorf("%w: content type must be printable ASCII", ErrInvalidOption)
		}
		o.contentType = ct
		return nil
	}
}

// WithHeader adds a NATS header for services subscribed to the subject
// (clients never see headers). Names starting with "Nats-" or "Fabric-"
// (server and Fabric control headers, e.g. Nats-Rollup would purge the
// channel's history) and Content-Type (use WithContentType) are refused.
func WithHeader(k, v string) Option {
	return func(o *options) error {
		if err := checkHeader(k, v); err != nil {
			return err
		}
		if o.headers == nil {
			o.headers = nats.Header{}
		}
		if len(o.headers) >= maxHeaders {
			if _, ok := o.headers[k]; !ok {
				return fmt.Errorf("%w: more than %d headers", ErrInvalidOption, maxHeaders)
			}
		}
		o.headers[k] = append(o.headers[k], v)
		return nil
	}
}

func checkHeader(k, v string) error {
	if k == "" || len(k) > maxHeaderName {
		return fmt.Errorf("%w: header names are 1-%d characters", ErrInvalidOption, maxHeaderName)
	}
	for i := 0; i < len(k); i++ {
		if !tokenChar(k[i]) {
			return fmt.Errorf("%w: header name with a character outside HTTP token characters", ErrInvalidOption)
		}
	}
	lk := strings.ToLower(k)
	if strings.HasPrefix(lk, "nats-") || strings.HasPrefix(lk, "fabric-") || lk == "content-type" {
		return fmt.Errorf("%w: header %s is reserved", ErrInvalidOption, k)
	}
	if len(v) > maxHeaderValue || !utf8.ValidString(v) {
		return fmt.Errorf("%w: header %s: value too long or not UTF-8", ErrInvalidOption, k)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7F {
			return fmt.Errorf("%w: header %s: control character in value", ErrInvalidOption, k)
		}
	}
	return nil
}

// tokenChar reports an RFC 9110 token character (what NATS and HTTP both
// accept in a header name).
func tokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// ValidEvent reports whether a gateway delivers event to clients: what
// natsbroker accepts from the Fabric-Event header. "phx_" events are the
// channel's own control events and "fabric:" events are the gateway's, so
// a publisher may not send either.
func ValidEvent(e string) bool {
	return e == strings.TrimSpace(e) && subject.ValidEvent(e)
}

// topicError keeps the subject package's reason and matches both
// ErrInvalidTopic and subject.ErrInvalidTopic.
type topicError struct{ cause error }

func (e *topicError) Error() string {
	var se *subject.Error
	if errors.As(e.cause, &se) {
		return ErrInvalidTopic.Error() + ": " + se.Reason
	}
	return ErrInvalidTopic.Error()
}

func (e *topicError) Unwrap() []error { return []error{ErrInvalidTopic, e.cause} }

// Subject returns the NATS subject of topic, exactly as the gateway maps
// it, or an error wrapping ErrInvalidTopic.
func (p *Publisher) Subject(topic string) (string, error) {
	s, err := subject.Map(p.prefix, topic)
	if err != nil {
		return "", &topicError{cause: err}
	}
	return s, nil
}

// prepared is a validated message, ready to send.
type prepared struct {
	topic, subj string
	msg         *nats.Msg
	idemKey     string // the caller's key ("" when generated)
}

func (p *Publisher) prepare(topic, event string, payload []byte, opts []Option) (*prepared, error) {
	subj, err := p.Subject(topic)
	if err != nil {
		return nil, err
	}
	if event == "" {
		event = wire.DefaultEvent
	}
	if !ValidEvent(event) {
		return nil, ErrInvalidEvent
	}
	var o options
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	h := o.headers
	if h == nil {
		h = nats.Header{}
	}
	h[wire.HeaderEvent] = []string{event}
	if o.contentType != "" {
		h[wire.HeaderContentType] = []string{o.contentType}
	}
	return &prepared{topic: topic, subj: subj, idemKey: o.idemKey,
		msg: &nats.Msg{Subject: subj, Header: h, Data: payload}}, nil
}

// Publish sends payload as event to the members of topic and returns once
// it is stored (persistent topics: JetStream acknowledged it, Result has
// its epoch and offset) or once the server processed it (ephemeral topics:
// offset 0). Event "" means "message". It never reports success for a
// message that was not acknowledged: failures wrap ErrUnavailable,
// ErrTooLarge or one of the ErrInvalid errors.
func (p *Publisher) Publish(ctx context.Context, topic, event string, payload []byte, opts ...Option) (Result, error) {
	m, err := p.prepare(topic, event, payload, opts)
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return p.send(ctx, m, m.idemKey)
}

// Broadcast publishes the same message to every topic, concurrently, and
// returns one Result per topic in order. Every topic is validated before
// anything is sent. With an idempotency key K, the message id on topic T
// is "K:" + its subject, so each topic deduplicates on its own and a
// retried Broadcast stores nothing twice. On error the returned slice
// still holds the results of the topics that succeeded (zero for the
// others) and the error names the failed topics; retry with the same key.
func (p *Publisher) Broadcast(ctx context.Context, topics []string, event string, payload []byte, opts ...Option) ([]Result, error) {
	ms := make([]*prepared, len(topics))
	for i, topic := range topics {
		m, err := p.prepare(topic, event, payload, opts)
		if err != nil {
			return nil, fmt.Errorf("topic %d: %w", i, err)
		}
		ms[i] = m
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	results := make([]Result, len(ms))
	errs := make([]error, len(ms))
	p.sendAll(ctx, ms, results, errs, func(m *prepared) string {
		if m.idemKey == "" {
			return ""
		}
		return m.idemKey + ":" + m.subj
	})
	return results, joinTopicErrors(topics, errs)
}

// sendAll sends ms concurrently (at most 32 in flight), each with the id
// key(m).
func (p *Publisher) sendAll(ctx context.Context, ms []*prepared, results []Result, errs []error, key func(*prepared) string) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i], errs[i] = p.send(ctx, m, key(m))
		}()
	}
	wg.Wait()
}

// TopicError reports which topics of a Broadcast or batch failed.
type TopicError struct {
	Failed map[int]error // index in the request → its error
	Topics []string
}

func (e *TopicError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "publisher: %d of %d messages failed", len(e.Failed), len(e.Topics))
	first := -1
	for i := range e.Failed {
		if first < 0 || i < first {
			first = i
		}
	}
	if first >= 0 {
		// One example keeps the message short.
		fmt.Fprintf(&b, "; %q: %v", e.Topics[first], e.Failed[first])
	}
	return b.String()
}

// Unwrap returns the distinct failures, so errors.Is(err, ErrUnavailable)
// works on the whole.
func (e *TopicError) Unwrap() []error {
	out := make([]error, 0, len(e.Failed))
	for _, err := range e.Failed {
		out = append(out, err)
	}
	return out
}

func joinTopicErrors(topics []string, errs []error) error {
	var te *TopicError
	for i, err := range errs {
		if err == nil {
			continue
		}
		if te == nil {
			te = &TopicError{Failed: map[int]error{}, Topics: topics}
		}
		te.Failed[i] = err
	}
	if te == nil {
		return nil
	}
	return te
}

// send publishes one prepared message with message id key ("" generates
// one for persistent topics).
func (p *Publisher) send(ctx context.Context, m *prepared, key string) (Result, error) {
	// While disconnected nats.go would buffer the message and send it after
	// a reconnect, long after this call reported a failure; refusing here
	// means a failure leaves nothing behind.
	if st := p.nc.Status(); st != nats.CONNECTED {
		return Result{}, fmt.Errorf("%w: NATS connection %s", ErrUnavailable, strings.ToLower(st.String()))
	}
	// A connection lost while waiting for the ack ends the wait: the
	// answer cannot come any more.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(p.liveCtx(), func() { cancel(errConnectionLost) })
	defer stop()
	if max := p.nc.MaxPayload(); max > 0 && int64(len(m.msg.Data)) > max {
		return Result{}, fmt.Errorf("%w: %d bytes, the server accepts %d", ErrTooLarge, len(m.msg.Data), max)
	}
	stream, err := p.streamOf(ctx, m.topic, m.subj)
	if err != nil {
		return Result{}, err
	}
	// Each send gets its own message: nats.go adds headers to it.
	msg := &nats.Msg{Subject: m.subj, Data: m.msg.Data, Header: make(nats.Header, len(m.msg.Header)+1)}
	for k, v := range m.msg.Header {
		msg.Header[k] = v
	}
	if stream == "" {
		// Stamped at the last moment, so the gateways' fan-out latency
		// starts when the message leaves for the server.
		msg.Header[wire.HeaderTime] = []string{strconv.FormatInt(time.Now().UnixNano(), 10)}
		if err := p.nc.PublishMsg(msg); err != nil {
			return Result{}, classify(ctx, err)
		}
		if err := p.nc.FlushWithContext(ctx); err != nil {
			return Result{}, classify(ctx, err)
		}
		return Result{}, nil
	}
	id := key
	if id == "" {
		// A unique id still matters without a caller key: it keeps
		// nats.go's own retries from storing the message twice.
		id = nats.NewInbox()[len(nats.InboxPrefix):]
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithRetryAttempts(p.retries))
	if err != nil {
		return Result{}, classify(ctx, err)
	}
	epoch, err := p.epoch(ctx, ack.Stream)
	if err != nil {
		// Stored, but its position cannot be named; the caller retries
		// (with its key: answered as a duplicate with the same offset).
		return Result{}, fmt.Errorf("%w: stored at %d but the stream's epoch is unknown: %v", ErrUnavailable, ack.Sequence, err)
	}
	return Result{Epoch: epoch, Offset: ack.Sequence, Duplicate: ack.Duplicate && key != ""}, nil
}

// classify wraps a NATS or JetStream publish error in ErrTooLarge or
// ErrUnavailable, naming a lost connection as the cause when it was.
func classify(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errConnectionLost) {
		err = cause
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10054) { // JSStreamMessageExceedsMaximumErr
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// streamOf returns the stream storing topic's namespace, or "" when the
// namespace is ephemeral. With Config.Persistent the stream name is not
// needed ("-" stands for "some stream"); otherwise the server is asked
// once per namespace. A namespace once seen persistent stays persistent
// until Refresh: a stream that disappears must make publishes fail, not
// silently turn into unacknowledged core publishes.
func (p *Publisher) streamOf(ctx context.Context, topic, subj string) (string, error) {
	if p.persist != nil {
		if p.persist(topic) {
			return "-", nil
		}
		return "", nil
	}
	ns, _, _ := strings.Cut(topic, ":")
	p.mu.Lock()
	e, ok := p.nss[ns]
	now := p.nowFunc()
	p.mu.Unlock()
	if ok && (e.stream != "" || now.Before(e.expires)) {
		return e.stream, nil
	}
	name, err := p.js.StreamNameBySubject(ctx, subj)
	switch {
	case err == nil:
	case errors.Is(err, jetstream.ErrStreamNotFound),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		// No stream captures the subject (or there is no JetStream at
		// all): ephemeral.
		name = ""
	default:
		if ok {
			return e.stream, nil // keep the expired answer while the server cannot say
		}
		return "", fmt.Errorf("%w: cannot tell whether %q is persistent: %w", ErrUnavailable, ns, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.nss[ns]; ok && old.stream != "" && name == "" {
		return old.stream, nil // sticky: see above
	}
	p.nss[ns] = nsEntry{stream: name, expires: now.Add(ephemeralTTL)}
	return name, nil
}

// epoch returns the epoch of stream, from the cache or the stream's
// StreamInfo (wire.Epoch). A stream no gateway has stamped yet (created
// outside Fabric, or re-added from a saved config) gets the epoch the
// gateways derive for it.
func (p *Publisher) epoch(ctx context.Context, stream string) (string, error) {
	p.mu.Lock()
	e, ok := p.epochs[stream]
	now := p.nowFunc()
	p.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.epoch, nil
	}
	st, err := p.js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	// The gateways' rule, so the epoch returned is the one they name this
	// incarnation by, recorded yet or not.
	epoch, _, _ := wire.Epoch(st.CachedInfo(), "")
	if epoch != "" {
		p.mu.Lock()
		p.epochs[stream] = epochEntry{epoch: epoch, expires: now.Add(epochTTL)}
		p.mu.Unlock()
	}
	return epoch, nil
}
