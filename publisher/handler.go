package publisher

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// Paths the Handler serves.
const (
	PathPublish = "/api/v1/publish"
	PathBatch   = "/api/v1/publish/batch"
)

// Content types of request and response bodies.
const (
	ContentTypeProtobuf = "application/x-protobuf"
	ContentTypeJSON     = "application/json"
)

const (
	// DefaultMaxBody is HandlerConfig.MaxBody's default: NATS's default
	// max_payload, so a body that fits is not refused by the server.
	DefaultMaxBody = 1 << 20
	// DefaultMaxBatch is HandlerConfig.MaxBatch's default.
	DefaultMaxBatch = 1000
)

var (
	// ErrUnauthenticated from Authenticate answers 401: no or unknown
	// credentials.
	ErrUnauthenticated = errors.New("publisher: unauthenticated")
	// ErrForbidden from Authenticate answers 403: valid credentials that
	// may not publish (a client connection token, a token for other topics).
	ErrForbidden = errors.New("publisher: forbidden")
	// ErrRateLimited from Authorize answers 429 + Retry-After: the
	// credentials made too many requests.
	ErrRateLimited = errors.New("publisher: rate limited")
)

// HandlerConfig configures the HTTP publish endpoint.
type HandlerConfig struct {
	// Publisher sends the messages (required).
	Publisher *Publisher
	// Authenticate vets every request before its body is read (required:
	// an open publish endpoint must be asked for explicitly, with a func
	// returning nil). It returns nil, or an error wrapping
	// ErrUnauthenticated (401) or ErrForbidden (403); any other error is
	// treated as ErrUnauthenticated. See APIKeys.
	Authenticate func(*http.Request) error
	// Authorize, when set, is asked once the body is parsed, with the
	// topic of every message: nil, or an error wrapping ErrForbidden
	// (403), ErrRateLimited (429) or anything else (401). Nothing is
	// published unless it allows every topic.
	Authorize func(r *http.Request, topics []string) error
	// MaxBody is the largest request body in bytes (default 1 MiB); a
	// larger one is answered 413 without being read.
	MaxBody int64
	// MaxBatch is the most messages one batch request may carry (default
	// 1000); more is 400.
	MaxBatch int
	// Available, when set, is asked about each message's topic first: an
	// error means NATS is known to be away, and the request is answered
	// 503 + Retry-After at once instead of after the publish timeout.
	Available func(topic string) error
	// RetryAfter is the Retry-After sent with 503 (default 1s).
	RetryAfter time.Duration
	// Logger receives one line per failed publish (never the payload or
	// credentials); nil discards.
	Logger *slog.Logger
}

// Handler serves POST /api/v1/publish and POST /api/v1/publish/batch.
//
// The body is a fabric.v1.PublishRequest (PublishBatchRequest for /batch)
// encoded as protobuf (Content-Type application/x-protobuf) or in the
// protobuf JSON mapping (application/json; "payload" is base64, as every
// bytes field in that mapping). A JSON body may give a JSON payload as a
// JSON value in "data" instead, forwarded byte-exact (see jsondata.go);
// both at once is 400. The answer is a PublishResponse
// (PublishBatchResponse) in the same encoding; in JSON, offsets are decimal
// strings (the mapping of uint64) and every field is present.
//
// Status codes: 200 only once the message was acknowledged (stored, for a
// persistent topic); 400 malformed body, topic, event, header or key; 401
// and 403 from Authenticate; 405 not POST; 413 body or message too large;
// 415 another content type; 503 with Retry-After when NATS is disconnected
// or JetStream did not acknowledge in time. Errors have a JSON body
// {"error": code, "message": text}.
//
// A batch is validated whole before anything is sent (one bad message: 400,
// nothing published); its messages are then published concurrently. If
// any fails the answer is that failure's status and the others may have
// been stored: give every message an idempotency key, so that retrying the
// batch stores each exactly once.
type Handler struct {
	p          *Publisher
	auth       func(*http.Request) error
	authorize  func(*http.Request, []string) error
	maxBody    int64
	maxBatch   int
	retryAfter string
	log        *slog.Logger
	avail      func(topic string) error // nil: always try

	// codes counts answers by status; every answer goes through
	// writeError or reply, which count it. A mutex and a map rather than
	// a fixed array: the set of codes is small but open-ended.
	codesMu sync.Mutex
	codes   map[int]uint64
}

// StatusCodes are the statuses the handler answers with. Responses counts
// each of them, so a metric built from it has every series from the start.
var StatusCodes = []int{
	http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
	http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests,
	http.StatusUnsupportedMediaType, http.StatusInternalServerError, http.StatusServiceUnavailable,
}

func (h *Handler) count(status int) {
	h.codesMu.Lock()
	h.codes[status]++
	h.codesMu.Unlock()
}

// Responses returns how many requests the handler answered, by HTTP
// status (every StatusCodes key is present). A request whose client went
// away before the answer was written is still counted.
func (h *Handler) Responses() map[int]uint64 {
	h.codesMu.Lock()
	defer h.codesMu.Unlock()
	out := make(map[int]uint64, len(h.codes))
	for code, n := range h.codes {
		out[code] = n
	}
	return out
}

// NewHandler returns the publish endpoint. Mount it on both paths, e.g.
// mux.Handle(PathPublish, h) and mux.Handle(PathBatch, h).
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("publisher: HandlerConfig.Publisher is nil")
	}
	if cfg.Authenticate == nil {
		return nil, errors.New("publisher: HandlerConfig.Authenticate is nil (pass APIKeys(...), or a func returning nil for an open endpoint)")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	secs := int((cfg.RetryAfter + time.Second - 1) / time.Second)
	h := &Handler{p: cfg.Publisher, auth: cfg.Authenticate, authorize: cfg.Authorize, maxBody: cfg.MaxBody,
		maxBatch: cfg.MaxBatch, retryAfter: strconv.Itoa(secs), log: cfg.Logger, avail: cfg.Available,
		codes: make(map[int]uint64, len(StatusCodes))}
	for _, c := range StatusCodes {
		h.codes[c] = 0
	}
	return h, nil
}

// codec is the request's body encoding.
type codec int

const (
	codecProto codec = iota
	codecJSON
)

func (c codec) contentType() string {
	if c == codecJSON {
		return ContentTypeJSON
	}
	return ContentTypeProtobuf
}

func (c codec) unmarshal(b []byte, m proto.Message) error {
	if c == codecJSON {
		return protojson.Unmarshal(b, m)
	}
	return proto.Unmarshal(b, m)
}

func (c codec) marshal(m proto.Message) ([]byte, error) {
	if c == codecJSON {
		return protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	}
	return proto.Marshal(m)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	batch := false
	switch r.URL.Path {
	case PathPublish:
	case PathBatch:
		batch = true
	default:
		h.writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if err := h.auth(r); err != nil {
		if errors.Is(err, ErrForbidden) {
			h.writeError(w, http.StatusForbidden, "forbidden", "these credentials may not publish")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="fabric"`)
		h.writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown credentials")
		return
	}
	var c codec
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		h.writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/x-protobuf or application/json")
		return
	case mt == ContentTypeProtobuf || mt == "application/protobuf":
		c = codecProto
	case mt == ContentTypeJSON:
		c = codecJSON
	default:
		h.writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/x-protobuf or application/json")
		return
	}
	if r.ContentLength > h.maxBody {
		h.writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", h.maxBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", h.maxBody))
			return
		}
		h.writeError(w, http.StatusBadRequest, "invalid_body", "cannot read the body")
		return
	}
	if batch {
		h.serveBatch(w, r, c, body)
		return
	}
	var data []byte
	if c == codecJSON {
		if body, data, _, err = extractData(body); err != nil {
			h.writeError(w, http.StatusBadRequest, "invalid_body", err.Error())
			return
		}
	}
	var req fabricv1.PublishRequest
	if err := c.unmarshal(body, &req); err != nil {
		h.writeError(w, http.StatusBadRequest, "invalid_body", "body is not a valid fabric.v1.PublishRequest")
		return
	}
	if data != nil {
		req.Payload = data
	}
	if !h.authorized(w, r, []string{req.GetTopic()}) {
		return
	}
	m, err := h.p.prepare(req.GetTopic(), req.GetEvent(), req.GetPayload(), requestOptions(&req))
	if err != nil {
		h.fail(w, err, req.GetTopic())
		return
	}
	if err := h.available(req.GetTopic()); err != nil {
		h.fail(w, err, req.GetTopic())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.p.timeout)
	defer cancel()
	var res Result
	err = bounded(ctx, func() (err error) {
		res, err = h.p.send(ctx, m, m.idemKey)
		return err
	})
	if err != nil {
		h.fail(w, err, req.GetTopic())
		return
	}
	h.reply(w, c, toProto(res))
}

func (h *Handler) serveBatch(w http.ResponseWriter, r *http.Request, c codec, body []byte) {
	ctx := r.Context()
	var datas [][]byte
	if c == codecJSON {
		var err error
		if body, datas, err = extractBatchData(body); err != nil {
			h.writeError(w, http.StatusBadRequest, "invalid_body", err.Error())
			return
		}
	}
	var req fabricv1.PublishBatchRequest
	if err := c.unmarshal(body, &req); err != nil {
		h.writeError(w, http.StatusBadRequest, "invalid_body", "body is not a valid fabric.v1.PublishBatchRequest")
		return
	}
	for i, d := range datas {
		if d != nil && i < len(req.Messages) {
			req.Messages[i].Payload = d
		}
	}
	if len(req.GetMessages()) > h.maxBatch {
		h.writeError(w, http.StatusBadRequest, "invalid_body", fmt.Sprintf("more than %d messages", h.maxBatch))
		return
	}
	ms := make([]*prepared, len(req.GetMessages()))
	topics := make([]string, len(ms))
	for i, m := range req.GetMessages() {
		topics[i] = m.GetTopic()
	}
	if !h.authorized(w, r, topics) {
		return
	}
	for i, r := range req.GetMessages() {
		m, err := h.p.prepare(r.GetTopic(), r.GetEvent(), r.GetPayload(), requestOptions(r))
		if err != nil {
			h.fail(w, fmt.Errorf("message %d: %w", i, err), r.GetTopic())
			return
		}
		ms[i], topics[i] = m, r.GetTopic()
		if err := h.available(r.GetTopic()); err != nil {
			h.fail(w, err, r.GetTopic())
			return
		}
	}
	ctx, cancel := context.WithTimeout(ctx, h.p.timeout)
	defer cancel()
	results := make([]Result, len(ms))
	errs := make([]error, len(ms))
	if err := bounded(ctx, func() error {
		h.p.sendAll(ctx, ms, results, errs, func(m *prepared) string { return m.idemKey })
		return nil
	}); err != nil {
		h.fail(w, err, "")
		return
	}
	if err := joinTopicErrors(topics, errs); err != nil {
		h.fail(w, err, "")
		return
	}
	out := &fabricv1.PublishBatchResponse{Results: make([]*fabricv1.PublishResponse, len(results))}
	for i, res := range results {
		out.Results[i] = toProto(res)
	}
	h.reply(w, c, out)
}

func requestOptions(r *fabricv1.PublishRequest) []Option {
	opts := make([]Option, 0, 2+len(r.GetHeaders()))
	if k := r.GetIdempotencyKey(); k != "" {
		opts = append(opts, WithIdempotencyKey(k))
	}
	if ct := r.GetContentType(); ct != "" {
		opts = append(opts, WithContentType(ct))
	}
	for k, v := range r.GetHeaders() {
		opts = append(opts, WithHeader(k, v))
	}
	return opts
}

func toProto(r Result) *fabricv1.PublishResponse {
	return &fabricv1.PublishResponse{Epoch: r.Epoch, Offset: r.Offset, Duplicate: r.Duplicate}
}

func (h *Handler) reply(w http.ResponseWriter, c codec, m proto.Message) {
	b, err := c.marshal(m)
	if err != nil {
		// Cannot happen for these messages; the publish did succeed, so
		// say so in the one encoding that cannot fail.
		h.log.Error("publisher: cannot encode the response", "err", err)
		h.writeError(w, http.StatusInternalServerError, "internal", "published, but the response could not be encoded")
		return
	}
	w.Header().Set("Content-Type", c.contentType())
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	h.count(http.StatusOK)
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// authorized asks Authorize about topics and answers the refusal, if any.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request, topics []string) bool {
	if h.authorize == nil {
		return true
	}
	err := h.authorize(r, topics)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrForbidden):
		h.writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, ErrRateLimited):
		w.Header().Set("Retry-After", "1")
		h.writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests for these credentials")
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="fabric"`)
		h.writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown credentials")
	}
	return false
}

// bounded runs send and returns its error, or ErrUnavailable once ctx
// ended if send is still running then: nats.go can keep a call waiting on
// its connection lock (held across each redial, 2 s a time) past any
// context, and a publish is answered 503 within its timeout all the same.
// An abandoned send finishes in the background and writes only to what
// send itself closes over, which the caller then leaves alone; its
// idempotency key makes the client's retry safe.
func bounded(ctx context.Context, send func() error) error {
	done := make(chan error, 1)
	go func() { done <- send() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(50 * time.Millisecond) // let a send that saw ctx end report it itself
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w: no answer from NATS within the publish timeout", ErrUnavailable)
	}
}

// available is HandlerConfig.Available's verdict, as an ErrUnavailable.
func (h *Handler) available(topic string) error {
	if h.avail == nil {
		return nil
	}
	if err := h.avail(topic); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// fail answers a publish error with its status.
func (h *Handler) fail(w http.ResponseWriter, err error, topic string) {
	switch {
	case errors.Is(err, ErrInvalidTopic):
		h.writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
	case errors.Is(err, ErrInvalidEvent):
		h.writeError(w, http.StatusBadRequest, "invalid_event", err.Error())
	case errors.Is(err, ErrInvalidOption):
		h.writeError(w, http.StatusBadRequest, "invalid_option", err.Error())
	case errors.Is(err, ErrUnavailable):
		h.log.Warn("publisher: publish failed", "topic", topic, "err", err)
		w.Header().Set("Retry-After", h.retryAfter)
		h.writeError(w, http.StatusServiceUnavailable, "unavailable", "not acknowledged; retry with the same idempotency_key")
	case errors.Is(err, ErrTooLarge):
		h.writeError(w, http.StatusRequestEntityTooLarge, "too_large", "message larger than the server accepts")
	default:
		// Anything unforeseen is still not an acknowledgement.
		h.log.Error("publisher: publish failed", "topic", topic, "err", err)
		w.Header().Set("Retry-After", h.retryAfter)
		h.writeError(w, http.StatusServiceUnavailable, "unavailable", "not acknowledged")
	}
}

func (h *Handler) writeError(w http.ResponseWriter, status int, code, msg string) {
	h.count(status)
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, msg})
	w.Header().Set("Content-Type", ContentTypeJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b)
}

// APIKeys returns an Authenticate func accepting requests that carry one
// of keys as "Authorization: Bearer <key>". Keys are compared in constant
// time (through their SHA-256, so not even the length leaks) and every key
// is checked, whichever matches. Empty keys are ignored; with none left
// every request is refused. Missing and unknown keys are both
// ErrUnauthenticated (401).
func APIKeys(keys []string) func(*http.Request) error {
	sums := make([][sha256.Size]byte, 0, len(keys))
	for _, k := range keys {
		if k != "" {
			sums = append(sums, sha256.Sum256([]byte(k)))
		}
	}
	return func(r *http.Request) error {
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return ErrUnauthenticated
		}
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return ErrUnauthenticated
		}
		got := sha256.Sum256([]byte(tok))
		match := 0
		for i := range sums {
			match |= subtle.ConstantTimeCompare(got[:], sums[i][:])
		}
		if match != 1 {
			return ErrUnauthenticated
		}
		return nil
	}
}
