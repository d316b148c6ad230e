// Package control is the contract for what a backend asks of every gateway
// at once: who is in a channel, which channels are active, disconnect a
// user, unsubscribe a user from a topic, revoke tokens, describe the fleet.
//
// The server API (publisher/serverapi) calls a Cluster; nats/natsctl
// implements it with a scatter-gather over NATS, each gateway answering
// with its local view. Stdlib only, so that both sides can import it
// without importing each other.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is wrapped by a Moderator's error when the topic or the
// offset has nothing stored: the caller's mistake, not the bus's.
var ErrNotFound = errors.New("not found")

// Coverage says which gateways took part in a cluster-wide operation. An
// answer is never silently partial: a gateway known to be alive that did
// not answer before the deadline is listed in Missing.
type Coverage struct {
	// Answered lists the ids of the gateways that answered in time.
	Answered []string
	// Missing lists the ids of gateways known to be alive that did not.
	Missing []string
}

// PresenceEntry is one presence key (a user, as Phoenix Presence lists it)
// with the metas of each of its connections, cluster-wide.
type PresenceEntry struct {
	Key   string
	Metas []json.RawMessage
}

// PresenceResult is the cluster-wide presence of one topic.
type PresenceResult struct {
	Topic   string
	Entries []PresenceEntry
	Coverage
}

// PresenceStatsResult counts a topic's presence without listing it.
type PresenceStatsResult struct {
	Topic string
	// Members is the number of distinct presence keys; Connections the
	// number of joined channel instances (one user may hold several).
	Members     int
	Connections int
	Coverage
}

// ChannelInfo is one active topic and its members summed over gateways.
type ChannelInfo struct {
	Topic   string
	Members int
}

// ChannelsResult lists the active topics matching a pattern.
type ChannelsResult struct {
	Channels []ChannelInfo
	Coverage
}

// DisconnectRequest closes every connection of a user on every gateway.
type DisconnectRequest struct {
	User   string // the JWT sub
	Code   int    // WebSocket close code (LongPoll sessions end)
	Reason string
	// Ban, when positive, refuses the user's upgrades on every gateway for
	// that long after the disconnect.
	Ban time.Duration
}

// UnsubscribeRequest removes a user from one topic everywhere: each of the
// user's channel instances on it receives phx_close.
type UnsubscribeRequest struct {
	User  string
	Topic string
}

// RevokeRequest revokes tokens: the one with id JTI, or every token of
// User issued before IssuedBefore. Until bounds how long the entry is
// kept (the tokens' latest possible exp).
type RevokeRequest struct {
	JTI          string
	User         string
	IssuedBefore time.Time
	Until        time.Time
}

// Affected reports how many connections (or channel instances) an
// operation closed.
type Affected struct {
	Count int
	Coverage
}

// GatewayInfo describes one live gateway.
type GatewayInfo struct {
	ID          string
	Version     string
	Uptime      time.Duration
	Connections int
	Channels    int
}

// NATSInfo describes the bus as the answering side sees it.
type NATSInfo struct {
	ClusterName string
	Servers     []string
	JetStream   bool
	// JetStreamDomain is empty for the default domain.
	JetStreamDomain string
}

// InfoResult describes the fleet.
type InfoResult struct {
	Gateways []GatewayInfo
	NATS     NATSInfo
	Coverage
}

// Cluster is what the server API needs from the fleet of gateways.
// Methods return once every live gateway answered or ctx's deadline
// passed; Coverage reports which.
type Cluster interface {
	Presence(ctx context.Context, topic string) (PresenceResult, error)
	PresenceStats(ctx context.Context, topic string) (PresenceStatsResult, error)
	Channels(ctx context.Context, pattern string) (ChannelsResult, error)
	Disconnect(ctx context.Context, req DisconnectRequest) (Affected, error)
	Unsubscribe(ctx context.Context, req UnsubscribeRequest) (Affected, error)
	Revoke(ctx context.Context, req RevokeRequest) (Affected, error)
	Info(ctx context.Context) (InfoResult, error)
}

// Moderator changes a persistent topic's stored history. Both the server
// API and `fabric channel` call it; nats/natsbroker implements it.
type Moderator interface {
	// ClearChannel removes every stored message of topic. Clients resuming
	// across it are told (recovered: false, history_cleared), and no
	// gateway serves the removed messages afterwards.
	ClearChannel(ctx context.Context, topic string) error
	// RemoveMessage removes the message at offset from topic's history; it
	// is never delivered again (replay, ring, live).
	RemoveMessage(ctx context.Context, topic string, offset uint64) error
}
