package auth

import (
	"encoding/json"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pat, topic string
		want       bool
	}{
		{"room:*", "room:lobby", true},
		{"room:*", "room:a:b", false},
		{"room:*", "room", false},
		{"room:*", "room:", false},
		{"room:*", "rooms:x", false},
		{"room:lobby", "room:lobby", true},
		{"room:lobby", "room:lobby2", false},
		{"room:lobby", "room:lobb", false},
		{"room:lobby", "room:lobby:x", false},
		{"room", "room", true},
		{"room", "room:x", false},
		{"game:42:>", "game:42", false},
		{"game:42:>", "game:42:x", true},
		{"game:42:>", "game:42:x:y", true},
		{"game:42:>", "game:42:", false},
		{"game:42:>", "game:42::y", false},
		{"game:42:>", "game:420:x", false},
		{"game:*:state", "game:7:state", true},
		{"game:*:state", "game:7:other", false},
		{"game:*:state", "game::state", false},
		{"*:*", "a:b", true},
		{"*:*", "a", false},
		{">", "anything:at:all", true},
		{">", "x", true},
		{"*", "x", true},
		{"*", "x:y", false},
		{"user:{sub}", "user:alice", false}, // unbound template never matches
		{"user:{sub}", "user:{sub}", false},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pat)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", c.pat, err)
		}
		if got := p.Match(c.topic); got != c.want {
			t.Errorf("%q.Match(%q) = %v, want %v", c.pat, c.topic, got, c.want)
		}
	}
	if (Pattern{}).Match("room:x") {
		t.Error("zero Pattern matched")
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, s := range []string{"", ":", "room:", ":room", "room::x", "room:**", "room:a*", "room:>:x", ">:x",
		"room:>>", "room:{user}", "room:{sub", "room:x{sub}", "room:\x00", "room:\nPUB", string(make([]byte, MaxPatternLen+1))} {
		if _, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) accepted", s)
		}
	}
}

func TestSubTemplating(t *testing.T) {
	p := MustParsePattern("user:{sub}:>")
	cases := []struct {
		sub, topic string
		want       bool
	}{
		{"alice", "user:alice:inbox", true},
		{"alice", "user:bob:inbox", false},
		{"alice", "user:alice", false},
		// Escaping attempts: the subject is one literal segment.
		{"*", "user:bob:inbox", false},
		{"*", "user:*:inbox", true}, // literal '*' only (such topics are invalid at join anyway)
		{">", "user:bob:inbox", false},
		{"bob:inbox", "user:bob:inbox", false}, // ':' refused: template dropped
		{"alice:x", "user:alice:x:inbox", false},
		{"", "user::inbox", false},
		{"a\nb", "user:a\nb:x", false},
	}
	for _, c := range cases {
		g := Grants{Join: []Pattern{p}}.For(c.sub)
		if got := g.CanJoin(c.topic); got != c.want {
			t.Errorf("sub %q: CanJoin(%q) = %v, want %v", c.sub, c.topic, got, c.want)
		}
	}
	if q, ok := p.Bind("alice"); !ok || q.String() != "user:alice:>" || q.IsTemplate() {
		t.Errorf("Bind = %q %v", q.String(), ok)
	}
	if _, ok := p.Bind("a:b"); ok {
		t.Error("Bind accepted a subject with ':'")
	}
	if q, ok := MustParsePattern("room:*").Bind("a:b"); !ok || q.String() != "room:*" {
		t.Error("non-template pattern changed by Bind")
	}
}

func TestGrantsAndClaims(t *testing.T) {
	ns := Grants{
		Join:    []Pattern{MustParsePattern("user:{sub}"), MustParsePattern("public:*")},
		Publish: []Pattern{MustParsePattern("user:{sub}")},
	}
	c := &Claims{Subject: "alice", Channels: []Pattern{MustParsePattern("room:*")}, Channel: "game:7:*",
		Publish: []Pattern{MustParsePattern("room:lobby")}}
	var pol Authorizer = c.Grants().Merge(ns.For(c.Subject))
	for topic, want := range map[string]bool{"room:x": true, "user:alice": true, "user:bob": false,
		"public:news": true, "game:7:*": true, "game:7:x": false, "secret": false} {
		if got := pol.CanJoin(topic); got != want {
			t.Errorf("CanJoin(%q) = %v, want %v", topic, got, want)
		}
	}
	for topic, want := range map[string]bool{"room:lobby": true, "room:x": false, "user:alice": true, "public:news": false} {
		if got := pol.CanPublish(topic); got != want {
			t.Errorf("CanPublish(%q) = %v, want %v", topic, got, want)
		}
	}
	if !c.CanJoin("game:7:*") || c.CanJoin("game:7:x") || !c.CanPublish("room:lobby") {
		t.Error("Claims methods disagree")
	}
	var nilc *Claims
	if nilc.CanJoin("x") || nilc.CanPublish("x") {
		t.Error("nil Claims allowed")
	}
	if !(&Claims{}).IsType(TypeConnect) || (&Claims{}).IsType(TypeJoin) || !(&Claims{Type: "join"}).IsType(TypeJoin) ||
		(&Claims{Type: "join"}).IsType(TypeConnect) {
		t.Error("IsType")
	}
}

func TestPatternText(t *testing.T) {
	var g struct{ Join []Pattern }
	if err := json.Unmarshal([]byte(`{"Join":["room:*","user:{sub}"]}`), &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Join) != 2 || g.Join[0].String() != "room:*" || !g.Join[1].IsTemplate() {
		t.Fatalf("%v", g.Join)
	}
	if err := json.Unmarshal([]byte(`{"Join":["room:**"]}`), &g); err == nil {
		t.Fatal("bad pattern accepted")
	}
	b, _ := json.Marshal(g.Join[0])
	if string(b) != `"room:*"` {
		t.Fatalf("marshal %s", b)
	}
}

func BenchmarkPatternMatch(b *testing.B) {
	p := MustParsePattern("game:*:>")
	b.ReportAllocs()
	for b.Loop() {
		if !p.Match("game:42:state:x") {
			b.Fatal("no match")
		}
	}
}
