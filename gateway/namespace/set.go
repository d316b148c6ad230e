package namespace

import (
	"maps"
	"slices"
	"time"
)

// Set is a validated namespaces config, answering per topic. A nil *Set
// is valid and configures nothing: every namespace is ephemeral, publishes
// its pushes and tracks no presence. Its methods do not allocate (they run
// per join and per push) and it never changes after New, so it is safe for
// concurrent use.
type Set struct {
	m map[string]Namespace
}

// New validates nss and returns its Set (nss is copied).
func New(nss map[string]Namespace) (*Set, error) {
	if err := Validate(nss); err != nil {
		return nil, err
	}
	return &Set{m: maps.Clone(nss)}, nil
}

// MustNew is New for configs known to be valid (tests, Defaults); it
// panics on an invalid one.
func MustNew(nss map[string]Namespace) *Set {
	s, err := New(nss)
	if err != nil {
		panic(err)
	}
	return s
}

// Lookup returns the config of topic's namespace, if it has one.
func (s *Set) Lookup(topic string) (Namespace, bool) {
	if s == nil {
		return Namespace{}, false
	}
	ns, ok := s.m[Of(topic)]
	return ns, ok
}

// Get returns namespace name's config, if it has one.
func (s *Set) Get(name string) (Namespace, bool) {
	if s == nil {
		return Namespace{}, false
	}
	ns, ok := s.m[name]
	return ns, ok
}

// Names lists the configured namespaces, sorted.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.m))
}

// Persistent reports whether topic's namespace keeps history (resumable
// by offset).
func (s *Set) Persistent(topic string) bool {
	ns, _ := s.Lookup(topic)
	return ns.History
}

// RoutesPushes reports whether client pushes on topic go to a service
// (pushes: request) instead of being published to the channel.
func (s *Set) RoutesPushes(topic string) bool {
	ns, _ := s.Lookup(topic)
	return ns.Pushes == PushesRequest
}

// PushTimeout is how long a routed push on topic may wait for the
// service's reply: its namespace's push_timeout, DefaultPushTimeout when
// not set.
func (s *Set) PushTimeout(topic string) time.Duration {
	if ns, _ := s.Lookup(topic); ns.PushTimeout > 0 {
		return ns.PushTimeout
	}
	return DefaultPushTimeout
}

// JoinHook reports whether joins on topic's namespace are asked of a
// service (joins: request), which joins (ScopeGranted or ScopeAll), and how
// long the answer may take.
func (s *Set) JoinHook(topic string) (scope string, timeout time.Duration, ok bool) {
	ns, _ := s.Lookup(topic)
	if ns.Joins != JoinsRequest {
		return "", 0, false
	}
	scope, timeout = ns.JoinScope, ns.JoinTimeout
	if scope == "" {
		scope = ScopeGranted
	}
	if timeout <= 0 {
		timeout = DefaultJoinTimeout
	}
	return scope, timeout, true
}

// HasJoinHooks reports whether any namespace asks a service about joins.
func (s *Set) HasJoinHooks() bool {
	if s == nil {
		return false
	}
	for _, ns := range s.m {
		if ns.Joins == JoinsRequest {
			return true
		}
	}
	return false
}

// Presence is a namespace's presence configuration, defaults applied.
type Presence struct {
	// MetaKey names the join param whose value becomes the app part of a
	// member's meta.
	MetaKey string
	// TTL is how long a gateway's members outlive its last message on the
	// bus (heartbeats go every TTL/3).
	TTL time.Duration
	// MaxMembers and MaxStateBytes override the gateway's presence caps
	// for the namespace (0: the gateway's; see gateway/presence).
	MaxMembers    int
	MaxStateBytes int
}

// Presence reports whether topic's namespace tracks presence, and how.
func (s *Set) Presence(topic string) (Presence, bool) {
	ns, _ := s.Lookup(topic)
	if !ns.Presence {
		return Presence{}, false
	}
	p := Presence{MetaKey: ns.PresenceMetaKey, TTL: ns.PresenceTTL,
		MaxMembers: ns.PresenceMaxMembers, MaxStateBytes: ns.PresenceMaxStateBytes}
	if p.MetaKey == "" {
		p.MetaKey = DefaultPresenceMetaKey
	}
	if p.TTL <= 0 {
		p.TTL = DefaultPresenceTTL
	}
	return p, true
}

// Compressed reports, per configured namespace, whether its broadcasts may
// be compressed (false: compression: false in its config).
func (s *Set) Compressed() map[string]bool {
	if s == nil {
		return nil
	}
	on := make(map[string]bool, len(s.m))
	for name, ns := range s.m {
		on[name] = ns.Compression == nil || *ns.Compression
	}
	return on
}
