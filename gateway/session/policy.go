package session

import (
	"encoding/json"

	"github.com/fabric-rt/fabric/gateway/phoenix"
)

// Policy: what a connection may join and publish, and the user's channel
// budget across connections.

// Policy decides what a connection may do. A nil Policy allows everything
// (anonymous development mode).
type Policy interface {
	CanJoin(topic string) bool
	CanPublish(topic string) bool
}

// UserPolicy is a Policy that knows the connection's authenticated user
// (its token's subject).
type UserPolicy interface {
	Policy
	Sub() string
}

// ChannelBudget is implemented by policies that bound the channels of a
// user across its connections: AcquireChannel is asked before a channel
// instance is added (false refuses the join), ReleaseChannel once for
// every instance that goes.
type ChannelBudget interface {
	AcquireChannel() bool
	ReleaseChannel()
}

// JoinTokenPolicy is a Policy that also accepts per-join tokens: apps that
// authorize each join from their backend put a token naming the topic in
// the join params ({"token": "…"}).
type JoinTokenPolicy interface {
	Policy
	CanJoinWithToken(topic, token string) bool
}

// releaseChannel gives a channel back to the user's budget.
func (s *Session) releaseChannel() {
	if b, ok := s.policy.(ChannelBudget); ok {
		b.ReleaseChannel()
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
