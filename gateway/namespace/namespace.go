// Package namespace is Fabric's namespace policy: what each namespace (the
// first topic segment, "room" in "room:lobby") does with history, client
// pushes, joins, presence and compression. The namespaces section of the
// config file is parsed into it, validated and given its defaults here;
// the gateway asks it, never the bus. It is pure: the NATS adapter receives
// only the stream settings of the namespaces that keep history.
package namespace

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Namespace configures one namespace. Namespaces not configured are
// ephemeral: core NATS, at-most-once, no offsets, like Phoenix.
type Namespace struct {
	// History keeps the namespace's messages in a JetStream stream
	// FABRIC_<ns> so clients can resume by offset.
	History bool `yaml:"history"`
	// MaxAge drops messages older than this (0: no age limit).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the whole stream on disk (0: the broker's default,
	// 1 GiB; -1: no byte limit). Over it the oldest messages go first.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxMsgsPerChannel bounds each channel's history (0: no limit).
	MaxMsgsPerChannel int64 `yaml:"max_msgs_per_channel"`
	// Replicas is the stream's replication factor (default 1; 3 in a cluster).
	Replicas int `yaml:"replicas"`
	// Pushes says what a client push on the namespace does: "publish"
	// (default: published to the channel, acked once NATS took it) or
	// "request" (sent as a NATS request to fabric_in.<ns>.… and the
	// service's reply relayed as the phx_reply).
	Pushes string `yaml:"pushes"`
	// PushTimeout bounds a routed push (default 5 s).
	PushTimeout time.Duration `yaml:"push_timeout"`
	// Joins says who admits a join: "token" (default: the connection
	// token's grants or a per-join token) or "request" (also a service,
	// asked on fabric_join.<ns>.…; docs/hooks.md).
	Joins string `yaml:"joins"`
	// JoinTimeout bounds the join hook's answer (default 5 s); no answer
	// in time refuses the join ("timeout").
	JoinTimeout time.Duration `yaml:"join_timeout"`
	// JoinScope is which joins are asked: "granted" (default: only those
	// the token allows) or "all" (the service may admit any).
	JoinScope string `yaml:"join_scope"`
	// Presence tracks who is in each channel of the namespace, cluster-wide,
	// and sends Phoenix's presence_state / presence_diff to its members.
	Presence bool `yaml:"presence"`
	// PresenceMetaKey is the join param carrying a member's app meta
	// (default "meta").
	PresenceMetaKey string `yaml:"presence_meta_key"`
	// PresenceTTL is how long a gateway's members outlive its last
	// presence message (it heartbeats every TTL/3): the time a crashed
	// gateway's members stay listed (default 15 s, minimum 1 s).
	PresenceTTL time.Duration `yaml:"presence_ttl"`
	// PresenceMaxMembers is the member cap of each channel: above it
	// members get counts (fabric:presence_count) instead of the member
	// list (default 1000; docs/presence.md).
	PresenceMaxMembers int `yaml:"presence_max_members"`
	// PresenceMaxStateBytes lowers the cap on a channel's encoded
	// presence_state (default and ceiling: half the per-connection output
	// budget, 128 KiB with the default --max-queue-bytes).
	PresenceMaxStateBytes int `yaml:"presence_max_state_bytes"`
	// AllowPurge and AllowDelete let purges and message deletes made
	// around Fabric (the nats CLI) through: by default the stream refuses
	// them (DenyPurge, DenyDelete), since Fabric cannot notice them in
	// time. Opting out loosens the resume guarantee (docs/history.md).
	AllowPurge  bool `yaml:"allow_purge"`
	AllowDelete bool `yaml:"allow_delete"`
	// LiveSubscription is how a gateway receives the namespace's live
	// messages: "auto" (default: one subscription per channel until the
	// gateway holds more than 1,000 of the namespace's channels, then one
	// wildcard subscription for all of them, back below 250), "channel"
	// or "namespace" (the wildcard always). The wildcard saves about
	// 1.5 KB per channel and makes every gateway receive every message
	// of the namespace (docs/history.md, "Live subscriptions").
	LiveSubscription string `yaml:"live_subscription"`
	// Compression: false sends the namespace's broadcasts uncompressed
	// even to clients that negotiated WebSocket compression (payloads
	// already compressed); unset or true follows --compression.
	Compression *bool `yaml:"compression"`
}

// Push routing modes (Namespace.Pushes).
const (
	PushesPublish = "publish"
	PushesRequest = "request"
)

// Live subscription modes (Namespace.LiveSubscription).
const (
	LiveAuto      = "auto"
	LiveChannel   = "channel"
	LiveNamespace = "namespace"
)

// Join admission modes (Namespace.Joins).
const (
	JoinsToken   = "token"
	JoinsRequest = "request"
)

// Join hook scopes (Namespace.JoinScope): which joins of a `joins: request`
// namespace are asked.
const (
	// ScopeGranted: only joins the token (or a per-join token) allows;
	// the service can refuse, never widen.
	ScopeGranted = "granted"
	// ScopeAll: every join; one the token does not cover is admitted if
	// the service says ok.
	ScopeAll = "all"
)

// Defaults of the settings that have one.
const (
	DefaultPushTimeout     = 5 * time.Second
	DefaultJoinTimeout     = 5 * time.Second
	DefaultPresenceMetaKey = "meta"
	DefaultPresenceTTL     = 15 * time.Second
	// MinPresenceTTL: below it heartbeats (every TTL/3) would flood the bus.
	MinPresenceTTL = time.Second
)

// Defaults is the development configuration, used when the config file has
// no namespaces section: room:* keeps at least 10,000 messages and one
// hour per channel, and tracks presence.
func Defaults() map[string]Namespace {
	return map[string]Namespace{
		"room": {History: true, MaxAge: time.Hour, MaxMsgsPerChannel: 10_000, Presence: true},
	}
}

// nameRE is what a namespace may be called: it becomes part of a stream
// name and of subjects.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name may name a namespace (1-64 characters of
// [A-Za-z0-9_-]).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate reports the first namespace config that cannot work, naming the
// namespace and the setting.
func Validate(nss map[string]Namespace) error {
	for name, ns := range nss {
		if err := ns.validate(name); err != nil {
			return err
		}
	}
	return nil
}

func (ns Namespace) validate(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("namespace %q: names are 1-64 characters of [A-Za-z0-9_-]", name)
	}
	if ns.MaxAge < 0 || ns.MaxBytes < -1 || ns.MaxMsgsPerChannel < 0 {
		return fmt.Errorf("namespace %q: limits must not be negative (max_bytes: -1 for no limit)", name)
	}
	if ns.Replicas < 0 || ns.Replicas > 5 {
		return fmt.Errorf("namespace %q: replicas must be between 1 and 5", name)
	}
	if !ns.History && (ns.MaxAge != 0 || ns.MaxBytes != 0 || ns.MaxMsgsPerChannel != 0 || ns.Replicas != 0 || ns.AllowPurge || ns.AllowDelete) {
		return fmt.Errorf("namespace %q: retention, replicas, allow_purge and allow_delete only apply with history: true", name)
	}
	switch ns.LiveSubscription {
	case "", LiveAuto, LiveChannel, LiveNamespace:
	default:
		return fmt.Errorf("namespace %q: live_subscription must be %q, %q or %q", name, LiveAuto, LiveChannel, LiveNamespace)
	}
	if !ns.History && ns.LiveSubscription != "" {
		return fmt.Errorf("namespace %q: live_subscription only applies with history: true (an ephemeral namespace keeps one subscription per channel)", name)
	}
	switch ns.Pushes {
	case "", PushesPublish, PushesRequest:
	default:
		return fmt.Errorf("namespace %q: pushes must be %q or %q", name, PushesPublish, PushesRequest)
	}
	if err := ns.validateJoins(); err != nil {
		return fmt.Errorf("namespace %q: %w", name, err)
	}
	if ns.PushTimeout < 0 {
		return fmt.Errorf("namespace %q: push_timeout must not be negative", name)
	}
	if !ns.Presence && (ns.PresenceMetaKey != "" || ns.PresenceTTL != 0 || ns.PresenceMaxMembers != 0 || ns.PresenceMaxStateBytes != 0) {
		return fmt.Errorf("namespace %q: presence_meta_key, presence_ttl, presence_max_members and presence_max_state_bytes only apply with presence: true", name)
	}
	if ns.PresenceMaxMembers < 0 || ns.PresenceMaxStateBytes < 0 {
		return fmt.Errorf("namespace %q: presence caps must not be negative", name)
	}
	if ns.PresenceTTL != 0 && ns.PresenceTTL < MinPresenceTTL {
		return fmt.Errorf("namespace %q: presence_ttl must be at least %s", name, MinPresenceTTL)
	}
	if len(ns.PresenceMetaKey) > 64 {
		return fmt.Errorf("namespace %q: presence_meta_key is longer than 64 bytes", name)
	}
	return nil
}

func (ns Namespace) validateJoins() error {
	switch ns.Joins {
	case "", JoinsToken, JoinsRequest:
	default:
		return fmt.Errorf("joins must be %q or %q", JoinsToken, JoinsRequest)
	}
	switch ns.JoinScope {
	case "", ScopeGranted, ScopeAll:
	default:
		return fmt.Errorf("join_scope must be %q or %q", ScopeGranted, ScopeAll)
	}
	if ns.JoinTimeout < 0 {
		return errors.New("join_timeout must not be negative")
	}
	if ns.Joins != JoinsRequest && (ns.JoinScope != "" || ns.JoinTimeout != 0) {
		return errors.New("join_scope and join_timeout only apply with joins: request")
	}
	return nil
}

// Of is topic's namespace: the part before the first ':' (all of it when
// there is none).
func Of(topic string) string {
	ns, _, _ := strings.Cut(topic, ":")
	return ns
}
