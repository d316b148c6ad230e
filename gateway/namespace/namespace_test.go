package namespace

import (
	"strings"
	"testing"
	"time"
)

// Every rule names the namespace and the setting; the messages are what an
// operator reads when `fabric serve` refuses a config file.
func TestValidate(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name string
		ns   Namespace
		want string // "" = valid
	}{
		{"room", Namespace{History: true, MaxAge: time.Hour, MaxBytes: -1, MaxMsgsPerChannel: 10, Replicas: 3, AllowPurge: true}, ""},
		{"room", Namespace{Compression: &no, Pushes: PushesRequest, PushTimeout: time.Second}, ""},
		{"bad.name", Namespace{}, `namespace "bad.name": names are 1-64 characters`},
		{strings.Repeat("a", 65), Namespace{}, "names are 1-64 characters"},
		{"room", Namespace{History: true, MaxBytes: -2}, "limits must not be negative"},
		{"room", Namespace{History: true, MaxAge: -1}, "limits must not be negative"},
		{"room", Namespace{History: true, Replicas: 6}, "replicas must be between 1 and 5"},
		{"room", Namespace{MaxAge: time.Hour}, "only apply with history: true"},
		{"room", Namespace{AllowDelete: true}, "only apply with history: true"},
		{"room", Namespace{Pushes: "reply"}, `pushes must be "publish" or "request"`},
		{"room", Namespace{PushTimeout: -1}, "push_timeout must not be negative"},
		// Live subscriptions.
		{"room", Namespace{History: true, LiveSubscription: LiveNamespace}, ""},
		{"room", Namespace{History: true, LiveSubscription: LiveChannel}, ""},
		{"room", Namespace{History: true, LiveSubscription: "wildcard"}, `namespace "room": live_subscription must be "auto", "channel" or "namespace"`},
		{"room", Namespace{LiveSubscription: LiveAuto}, "live_subscription only applies with history: true"},
		// Presence caps.
		{"room", Namespace{Presence: true, PresenceMaxMembers: 5000, PresenceMaxStateBytes: 64 << 10}, ""},
		{"room", Namespace{PresenceMaxMembers: 10}, "only apply with presence"},
		{"room", Namespace{PresenceMaxStateBytes: 10}, "only apply with presence"},
		{"room", Namespace{Presence: true, PresenceMaxMembers: -1}, "must not be negative"},
		{"room", Namespace{Presence: true, PresenceTTL: 500 * time.Millisecond}, "presence_ttl must be at least 1s"},
		{"room", Namespace{Presence: true, PresenceMetaKey: strings.Repeat("k", 65)}, "longer than 64 bytes"},
		// Join hooks.
		{"game", Namespace{Joins: JoinsRequest, JoinScope: ScopeAll, JoinTimeout: time.Second}, ""},
		{"game", Namespace{Joins: JoinsToken}, ""},
		{"game", Namespace{Joins: "ask"}, `namespace "game": joins must be "token" or "request"`},
		{"game", Namespace{Joins: JoinsRequest, JoinScope: "some"}, `join_scope must be "granted" or "all"`},
		{"game", Namespace{Joins: JoinsRequest, JoinTimeout: -1}, "join_timeout must not be negative"},
		{"game", Namespace{JoinTimeout: time.Second}, "only apply with joins: request"},
	} {
		err := Validate(map[string]Namespace{tc.name: tc.ns})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s %+v: %v, want %q", tc.name, tc.ns, err, tc.want)
		}
		if _, nerr := New(map[string]Namespace{tc.name: tc.ns}); (nerr == nil) != (err == nil) {
			t.Errorf("New and Validate disagree on %+v: %v / %v", tc.ns, nerr, err)
		}
	}
	if err := Validate(Defaults()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestSetAnswersPerTopic(t *testing.T) {
	no := false
	s := MustNew(map[string]Namespace{
		"room": {History: true, Presence: true},
		"game": {Pushes: PushesRequest, PushTimeout: 300 * time.Millisecond, Joins: JoinsRequest, JoinTimeout: time.Second, Compression: &no},
		"hall": {Presence: true, PresenceMetaKey: "profile", PresenceTTL: 3 * time.Second, PresenceMaxMembers: 7, Joins: JoinsRequest, JoinScope: ScopeAll},
	})
	if !s.Persistent("room:lobby") || s.Persistent("game:1") || s.Persistent("chat:1") || !s.Persistent("room") {
		t.Fatal("Persistent")
	}
	if !s.RoutesPushes("game:1") || s.RoutesPushes("room:1") || s.RoutesPushes("other:1") {
		t.Fatal("RoutesPushes")
	}
	if s.PushTimeout("game:1") != 300*time.Millisecond || s.PushTimeout("room:1") != DefaultPushTimeout {
		t.Fatal("PushTimeout")
	}
	if scope, timeout, ok := s.JoinHook("game:1"); !ok || scope != ScopeGranted || timeout != time.Second {
		t.Fatalf("JoinHook game: %s %v %v", scope, timeout, ok)
	}
	if scope, timeout, ok := s.JoinHook("hall:1"); !ok || scope != ScopeAll || timeout != DefaultJoinTimeout {
		t.Fatalf("JoinHook hall: %s %v %v", scope, timeout, ok)
	}
	if _, _, ok := s.JoinHook("room:1"); ok || !s.HasJoinHooks() {
		t.Fatal("room has no join hook; game has")
	}
	if p, ok := s.Presence("room:1"); !ok || p != (Presence{MetaKey: DefaultPresenceMetaKey, TTL: DefaultPresenceTTL}) {
		t.Fatalf("Presence room: %+v %v", p, ok)
	}
	if p, ok := s.Presence("hall:1"); !ok || p != (Presence{MetaKey: "profile", TTL: 3 * time.Second, MaxMembers: 7}) {
		t.Fatalf("Presence hall: %+v %v", p, ok)
	}
	if _, ok := s.Presence("game:1"); ok {
		t.Fatal("game tracks no presence")
	}
	if on := s.Compressed(); len(on) != 3 || on["game"] || !on["room"] || !on["hall"] {
		t.Fatalf("Compressed: %v", on)
	}
	if got := strings.Join(s.Names(), ","); got != "game,hall,room" {
		t.Fatalf("Names: %s", got)
	}
}

// A nil Set configures nothing: the gateway's unit tests and a gateway
// built without a namespaces config see every namespace as ephemeral.
func TestNilSet(t *testing.T) {
	var s *Set
	if s.Persistent("room:1") || s.RoutesPushes("room:1") || s.HasJoinHooks() || s.Names() != nil || s.Compressed() != nil {
		t.Fatal("nil Set configured something")
	}
	if _, ok := s.Presence("room:1"); ok {
		t.Fatal("presence on a nil Set")
	}
	if _, _, ok := s.JoinHook("room:1"); ok {
		t.Fatal("join hook on a nil Set")
	}
	if s.PushTimeout("room:1") != DefaultPushTimeout {
		t.Fatal("PushTimeout default")
	}
}

// The set is a copy: changing the map it was built from changes nothing.
func TestNewCopies(t *testing.T) {
	m := map[string]Namespace{"room": {History: true}}
	s := MustNew(m)
	m["room"] = Namespace{}
	if !s.Persistent("room:1") {
		t.Fatal("the Set shares the caller's map")
	}
}

// The per-topic questions run per join and per push: they must not allocate.
func TestLookupsDoNotAllocate(t *testing.T) {
	s := MustNew(Defaults())
	if n := testing.AllocsPerRun(100, func() {
		_ = s.Persistent("room:lobby")
		_ = s.RoutesPushes("room:lobby")
		_, _ = s.Presence("room:lobby")
		_, _, _ = s.JoinHook("room:lobby")
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}
