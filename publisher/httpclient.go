package publisher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// HTTPClient publishes through a gateway's HTTP endpoint (POST
// /api/v1/publish, see Handler) instead of NATS: for a service that can
// reach a gateway but not the NATS cluster. `fabric publish --api-url`
// uses it.
//
//	c := &publisher.HTTPClient{BaseURL: "https://fabric.example.com", APIKey: key}
//	res, err := c.Publish(ctx, "room:lobby", "new_msg", []byte(`{"body":"hi"}`),
//		publisher.WithIdempotencyKey(orderID))
//
// The options are checked here as Publish checks them; the topic and event
// are the gateway's to check (its 400 comes back as the error). A non-200
// answer is an *HTTPError.
type HTTPClient struct {
	// BaseURL is the gateway's HTTP address, http:// or https://, e.g.
	// http://127.0.0.1:4000 (a path is kept: a gateway behind a prefix).
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>"; "": none.
	APIKey string
	// Protobuf sends the request and reads the answer as protobuf
	// (ContentTypeProtobuf) instead of its JSON mapping.
	Protobuf bool
	// HTTP sends the requests; nil: http.DefaultClient. The deadline is
	// the context's.
	HTTP *http.Client
}

// HTTPError is a gateway's non-200 answer.
type HTTPError struct {
	Status     int    // e.g. 503
	Code       string // the body's "error", e.g. "unavailable"; "" if the body was not JSON
	Message    string // the body's "message", or the body itself
	RetryAfter string // the Retry-After header (seconds), if any
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
	if e.RetryAfter != "" {
		msg += " (retry after " + e.RetryAfter + "s)"
	}
	return msg
}

// maxHTTPAnswer bounds the answer read: a PublishResponse or an error body
// is far smaller.
const maxHTTPAnswer = 1 << 20

// Publish sends one message and returns the gateway's acknowledgement
// (Result as Publisher.Publish returns it).
func (c *HTTPClient) Publish(ctx context.Context, topic, event string, payload []byte, opts ...Option) (Result, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Result{}, fmt.Errorf("%w: the HTTP client's base URL must be an http:// or https:// URL", ErrInvalidOption)
	}
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return Result{}, err
		}
	}
	req := &fabricv1.PublishRequest{Topic: topic, Event: event, Payload: payload,
		ContentType: o.contentType, IdempotencyKey: o.idemKey}
	for k, vs := range o.headers {
		if len(vs) > 1 {
			return Result{}, fmt.Errorf("%w: header %s given twice (the HTTP API takes one value per header)", ErrInvalidOption, k)
		}
		if req.Headers == nil {
			req.Headers = map[string]string{}
		}
		req.Headers[k] = vs[0]
	}
	ct := ContentTypeJSON
	marshal, unmarshal := protojson.Marshal, protojson.Unmarshal
	if c.Protobuf {
		ct = ContentTypeProtobuf
		marshal, unmarshal = proto.Marshal, proto.Unmarshal
	}
	body, err := marshal(req)
	if err != nil {
		return Result{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath(PathPublish).String(), bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	hr.Header.Set("Content-Type", ct)
	if c.APIKey != "" {
		hr.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPAnswer))
	if err != nil {
		return Result{}, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		he := &HTTPError{Status: resp.StatusCode, Message: strings.TrimSpace(string(rb)), RetryAfter: resp.Header.Get("Retry-After")}
		var e struct{ Error, Message string }
		if json.Unmarshal(rb, &e) == nil && e.Message != "" {
			he.Code, he.Message = e.Error, e.Message
		}
		return Result{}, he
	}
	var out fabricv1.PublishResponse
	if err := unmarshal(rb, &out); err != nil {
		return Result{}, fmt.Errorf("unreadable answer: %w", err)
	}
	return Result{Epoch: out.GetEpoch(), Offset: out.GetOffset(), Duplicate: out.GetDuplicate()}, nil
}
