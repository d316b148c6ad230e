package natsbroker

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/broker"
)

// Presence traffic between gateways is core NATS on one subject per channel:
// <prefix>_presence.<ns>.<segments> ("fabric_presence.room.lobby"). Diffs,
// heartbeats and goodbyes are plain publishes; a state request is a publish
// with a reply inbox on the same subject, so a gateway needs exactly one
// subscription per presence channel it serves. Message bodies belong to
// gateway/presence.

var _ broker.Presence = (*Broker)(nil)

// PresenceOptions implements broker.Presence.
func (b *Broker) PresenceOptions(topic string) (broker.PresenceOptions, bool) {
	ns, _, _ := strings.Cut(topic, ":")
	c, ok := b.pushNS[ns]
	if !ok || !c.Presence {
		return broker.PresenceOptions{}, false
	}
	o := broker.PresenceOptions{MetaKey: c.PresenceMetaKey, TTL: c.PresenceTTL,
		MaxMembers: c.PresenceMaxMembers, MaxStateBytes: c.PresenceMaxStateBytes}
	if o.MetaKey == "" {
		o.MetaKey = DefaultPresenceMetaKey
	}
	if o.TTL <= 0 {
		o.TTL = DefaultPresenceTTL
	}
	return o, true
}

func (b *Broker) presenceSubject(topic string) (string, error) {
	subj, err := b.subject(topic)
	if err != nil {
		return "", err
	}
	return b.prefix + "_presence" + subj[len(b.prefix):], nil
}

// PresenceSubscribe implements broker.Presence.
func (b *Broker) PresenceSubscribe(ctx context.Context, topic string, h func([]byte, func([]byte) error)) (broker.Subscription, error) {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return nil, err
	}
	s := &presenceSub{}
	err = b.subscribe(ctx, &s.guarded, subj, func(m *nats.Msg) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		var reply func([]byte) error
		if m.Reply != "" {
			inbox := m.Reply
			reply = func(d []byte) error { return b.nc.Publish(inbox, d) }
		}
		h(m.Data, reply)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// presenceSub gives broker.Subscription's guarantee (no handler call starts
// after Unsubscribe returns), like subscription.
type presenceSub struct{ guarded }

func (s *presenceSub) Unsubscribe() error { return s.unsubscribe() }

// PresencePublish implements broker.Presence.
func (b *Broker) PresencePublish(topic string, msg []byte) error {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return err
	}
	return b.nc.Publish(subj, msg)
}

// PresenceRequest implements broker.Presence: a scatter-gather request
// answered by every gateway serving the channel; answers are collected on
// a private inbox for window.
func (b *Broker) PresenceRequest(ctx context.Context, topic string, req []byte, window time.Duration, h func([]byte) bool) error {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return err
	}
	inbox := b.nc.NewInbox()
	ch := make(chan *nats.Msg, 1024)
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	// The inbox subscription precedes the request on the connection, so
	// the server knows it before any gateway can answer.
	if err := b.nc.PublishRequest(subj, inbox, req); err != nil {
		return err
	}
	timer := time.NewTimer(window)
	defer timer.Stop()
	for {
		select {
		case m := <-ch:
			if !h(m.Data) {
				return nil
			}
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
