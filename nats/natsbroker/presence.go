package natsbroker

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Presence traffic between gateways is core NATS on one subject per channel:
// <prefix>_presence.<ns>.<segments> ("fabric_presence.room.lobby"). Diffs,
// heartbeats and goodbyes are plain publishes; a state request is a publish
// with a reply inbox on the same subject, so a gateway needs exactly one
// subscription per presence channel it serves. Message bodies belong to
// gateway/presence.

var _ broker.Presence = (*Broker)(nil)

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
