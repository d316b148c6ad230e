package natsbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/wire"
)

// A routed push request (fabric_in.<ns>.<segments>) carries the wire.Header*
// push headers; the body of the request is the push payload as sent, the
// body of the reply the JSON response.
//
// The caller's ctx bounds the request (the gateway gives it the
// namespace's push_timeout); without a deadline it gets defaultPushTimeout
// from meta.Sent, as a request nobody answers must end.
const defaultPushTimeout = 5 * time.Second

// Request implements broker.Handlers.
func (b *Broker) Request(ctx context.Context, topic, event string, payload []byte, meta broker.PushMeta) (broker.Reply, error) {
	subj, err := b.subject(topic)
	if err != nil {
		return broker.Reply{}, err
	}
	if err := b.Available(topic); err != nil {
		return broker.Reply{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		start := meta.Sent
		if start.IsZero() {
			start = time.Now()
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(defaultPushTimeout))
		defer cancel()
	}
	m := &nats.Msg{
		Subject: b.prefix + "_in" + subj[len(b.prefix):],
		Data:    payload,
		Header: nats.Header{
			wire.HeaderEvent: {event},
			wire.HeaderTopic: {topic},
			wire.HeaderConn:  {meta.ConnID},
		},
	}
	if meta.Subject != "" {
		m.Header.Set(wire.HeaderSub, meta.Subject)
	}
	if len(meta.JoinParams) > 0 && len(meta.JoinParams) <= 4096 {
		m.Header.Set(wire.HeaderJoinParams, string(meta.JoinParams))
	}
	if len(meta.Assigns) > 0 {
		m.Header.Set(wire.HeaderAssigns, string(meta.Assigns))
	}
	if !isJSON(payload) {
		m.Header.Set(wire.HeaderContentType, "application/octet-stream")
	}
	r, err := b.nc.RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return broker.Reply{}, broker.ErrNoHandler
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return broker.Reply{}, fmt.Errorf("%w: %w", broker.ErrTooLarge, err)
	}
	if err != nil {
		return broker.Reply{}, err
	}
	ok := !strings.EqualFold(r.Header.Get(wire.HeaderStatus), "error")
	// A JSON body is the response (the gateway relays only objects); an
	// empty one is {}; anything else, or a body declared non-JSON, is
	// bytes, relayed as a binary reply.
	ct, hasCT := headerValue(r.Header, wire.HeaderContentType)
	if hasCT && !isJSONType(ct) {
		return broker.Reply{OK: ok, Response: r.Data, Binary: true}, nil
	}
	resp := bytes.TrimSpace(r.Data)
	switch {
	case len(resp) == 0:
		resp = []byte("{}")
	case !isJSON(resp):
		return broker.Reply{OK: ok, Response: r.Data, Binary: true}, nil
	}
	return broker.Reply{OK: ok, Response: resp}, nil
}

// Emit implements broker.Events: connection lifecycle events on
// <prefix>_events.<kind>[.<topic subject tokens>], core NATS, best effort.
func (b *Broker) Emit(kind, topic string, body []byte) {
	subj := b.prefix + "_events." + kind
	if topic != "" {
		s, err := b.subject(topic)
		if err != nil {
			return
		}
		subj += s[len(b.prefix):]
	}
	_ = b.nc.Publish(subj, body)
}

var (
	_ broker.Handlers = (*Broker)(nil)
	_ broker.Events   = (*Broker)(nil)
)
