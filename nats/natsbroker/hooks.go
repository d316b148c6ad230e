package natsbroker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/wire"
)

// Join and connect hooks (Phoenix's join/3 and connect/3 over NATS): a
// request whose body is the JSON mapping of fabric.v1.JoinRequest or
// ConnectRequest (schema/proto/fabric/v1/hooks.proto), answered with a
// JoinReply or ConnectReply. Unlike a routed push, whose body is the
// client's own payload with Fabric's facts in headers, a hook request has
// no client body of its own: everything is structured, so it is one JSON
// document a service decodes with any JSON library.

const (
	// maxAssigns bounds a reply's assigns: they ride on every later push
	// request as a header and stay in memory with the channel.
	maxAssigns = 4096
	// maxCacheTTL caps how long a service may let its ok answer stand.
	maxCacheTTL = 5 * time.Minute
)

type position struct {
	Epoch  string `json:"epoch"`
	Offset string `json:"offset"` // uint64: a decimal string in the JSON mapping
}

// joinRequest is the JSON mapping of fabric.v1.JoinRequest (TestHookJSONMapping).
type joinRequest struct {
	Topic        string          `json:"topic"`
	SubjectID    string          `json:"subjectId,omitempty"`
	ConnectionID string          `json:"connectionId,omitempty"`
	Params       json.RawMessage `json:"params"`
	Claims       json.RawMessage `json:"claims,omitempty"`
	Assigns      json.RawMessage `json:"assigns,omitempty"`
	Granted      bool            `json:"granted,omitempty"`
	Resume       *position       `json:"resume,omitempty"`
}

type connectRequest struct {
	SubjectID string          `json:"subjectId,omitempty"`
	Claims    json.RawMessage `json:"claims,omitempty"`
	Params    json.RawMessage `json:"params"`
	Transport string          `json:"transport,omitempty"`
}

// hookReply decodes JoinReply and ConnectReply. The mapping's parsers
// accept both the lowerCamelCase and the original field names; encoding/json
// matches "cacheTtlMs" case-insensitively, the snake spelling needs its own
// field.
type hookReply struct {
	OK          bool            `json:"ok"`
	Reason      string          `json:"reason"`
	Response    json.RawMessage `json:"response"`
	Assigns     json.RawMessage `json:"assigns"`
	CacheTTLMs  uint32          `json:"cacheTtlMs"`
	CacheTTLMs2 uint32          `json:"cache_ttl_ms"`
	Channels    []string        `json:"channels"`
	Publish     []string        `json:"publish"`
}

// object returns raw as a JSON object, "{}" for nothing, or false.
func object(raw []byte) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, true
	}
	return raw, raw[0] == '{' && json.Valid(raw)
}

// RequestJoin implements broker.Hooks: a request to
// <prefix>_join.<ns>.<segments>.
func (b *Broker) RequestJoin(ctx context.Context, topic string, m broker.JoinMeta) (broker.HookAnswer, error) {
	subj, err := b.subject(topic)
	if err != nil {
		return broker.HookAnswer{}, err
	}
	params, ok := object(m.Params)
	if !ok || params == nil {
		params = []byte("{}")
	}
	req := joinRequest{Topic: topic, SubjectID: m.Subject, ConnectionID: m.ConnID, Params: params,
		Claims: m.Claims, Assigns: m.Assigns, Granted: m.Granted}
	if m.Resume != nil {
		req.Resume = &position{Epoch: m.Resume.Epoch, Offset: fmt.Sprint(m.Resume.Offset)}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return broker.HookAnswer{}, err
	}
	return b.hookRequest(ctx, b.prefix+"_join"+subj[len(b.prefix):], body)
}

// RequestConnect implements broker.Hooks: a request to <prefix>_connect.
func (b *Broker) RequestConnect(ctx context.Context, m broker.ConnectMeta) (broker.HookAnswer, error) {
	params, ok := object(m.Params)
	if !ok || params == nil {
		params = []byte("{}")
	}
	body, err := json.Marshal(connectRequest{SubjectID: m.Subject, Claims: m.Claims, Params: params, Transport: m.Transport})
	if err != nil {
		return broker.HookAnswer{}, err
	}
	return b.hookRequest(ctx, b.prefix+"_connect", body)
}

func (b *Broker) hookRequest(ctx context.Context, subj string, body []byte) (broker.HookAnswer, error) {
	if b.link != nil {
		// Only the link: a join hook does not need the namespace's stream.
		if err := b.link.Err(); err != nil {
			return broker.HookAnswer{}, err
		}
	}
	m := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{wire.HeaderContentType: {"application/json"}}}
	r, err := b.nc.RequestMsgWithContext(ctx, m)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return broker.HookAnswer{}, broker.ErrNoHandler
	case errors.Is(err, nats.ErrTimeout):
		return broker.HookAnswer{}, context.DeadlineExceeded
	case err != nil:
		return broker.HookAnswer{}, err
	}
	var rep hookReply
	if err := json.Unmarshal(r.Data, &rep); err != nil {
		return broker.HookAnswer{}, fmt.Errorf("%w: %w", broker.ErrInvalidHookReply, err)
	}
	a := broker.HookAnswer{OK: rep.OK, Reason: rep.Reason, Channels: rep.Channels, Publish: rep.Publish}
	var okResp, okAssigns bool
	a.Response, okResp = object(rep.Response)
	a.Assigns, okAssigns = object(rep.Assigns)
	if !okResp || !okAssigns || len(a.Assigns) > maxAssigns {
		return broker.HookAnswer{}, fmt.Errorf("%w: response and assigns must be JSON objects (assigns up to %d bytes)", broker.ErrInvalidHookReply, maxAssigns)
	}
	ttl := max(rep.CacheTTLMs, rep.CacheTTLMs2)
	a.CacheTTL = min(time.Duration(ttl)*time.Millisecond, maxCacheTTL)
	return a, nil
}

var _ broker.Hooks = (*Broker)(nil)
