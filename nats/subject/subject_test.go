package subject

import (
	"errors"
	"strings"
	"testing"
)

func TestMap(t *testing.T) {
	tests := []struct {
		topic, want string
	}{
		{"room:lobby", "fabric.room.lobby"},
		{"news", "fabric.news"},
		{"room:eu:42", "fabric.room.eu.42"},
		{"Room_1:a-b", "fabric.Room_1.a-b"},
		{"room:a.b", "fabric.room.a=2Eb"},
		{"room:a*", "fabric.room.a=2A"},
		{"room:**", "fabric.room.=2A=2A"},
		{"room:>>", "fabric.room.=3E=3E"},
		{"room:a b", "fabric.room.a=20b"},
		{"room:a=b", "fabric.room.a=3Db"},
		{"room:$SYS", "fabric.room.=24SYS"},
		{"$JS", "fabric.=24JS"},
		{"room:%2E", "fabric.room.=252E"},
		{"room:é", "fabric.room.=C3=A9"},
		{"room:日本", "fabric.room.=E6=97=A5=E6=9C=AC"},
		{"room:a/b", "fabric.room.a=2Fb"},
		{"room:\u00a0", "fabric.room.=C2=A0"}, // no-break space is not a control
		{strings.Repeat("a", MaxTopicLen), "fabric." + strings.Repeat("a", MaxTopicLen)},
	}
	for _, tt := range tests {
		got, err := Map("fabric", tt.topic)
		if err != nil {
			t.Errorf("Map(%q): %v", tt.topic, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Map(%q) = %q, want %q", tt.topic, got, tt.want)
		}
		back, err := Unmap("fabric", got)
		if err != nil || back != tt.topic {
			t.Errorf("Unmap(%q) = %q, %v; want %q", got, back, err, tt.topic)
		}
	}
}

func TestMapPrefix(t *testing.T) {
	got, err := Map("acme.fabric_live", "room:lobby")
	if err != nil || got != "acme.fabric_live.room.lobby" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := Map("$SYS", "room:lobby"); !errors.Is(err, ErrInvalidPrefix) {
		t.Fatalf("bad prefix accepted: %v", err)
	}
}

func TestMapRefuses(t *testing.T) {
	tests := []struct {
		name, topic, reason string
	}{
		{"empty", "", "empty"},
		{"trailing colon", "room:", "empty segment"},
		{"leading colon", ":x", "empty segment"},
		{"double colon", "a::b", "empty segment"},
		{"only colon", ":", "empty segment"},
		{"star segment", "room:*", "wildcard"},
		{"gt segment", "room:>", "wildcard"},
		{"star namespace", "*", "wildcard"},
		{"gt middle", "room:>:x", "wildcard"},
		{"too long", strings.Repeat("a", MaxTopicLen+1), "longer"},
		{"invalid utf8", "room:\xff", "UTF-8"},
		{"truncated utf8", "room:\xc3", "UTF-8"},
		{"CRLF injection", "room:\r\nPUB x 1", "control"},
		{"nul", "room:a\x00", "control"},
		{"tab", "room:a\tb", "control"},
		{"del", "room:\x7f", "control"},
		{"C1 NEL", "room:\u0085", "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Map("fabric", tt.topic)
			if err == nil {
				t.Fatalf("Map(%q) = %q, want error", tt.topic, s)
			}
			if !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("error %v does not wrap ErrInvalidTopic", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q lacks reason %q", err, tt.reason)
			}
		})
	}
}

func TestUnmapRefuses(t *testing.T) {
	for _, s := range []string{
		"",
		"fabric",
		"fabric.",
		"fabricx.room",
		"other.room.lobby",
		"fabric.room..lobby",
		"fabric.room.lobby.",
		"fabric..room",
		"fabric.room.=2a",     // lower-case hex
		"fabric.room.=61",     // escaped kept byte 'a'
		"fabric.room.=5F",     // escaped kept byte '_'
		"fabric.room.a=3Ab",   // escaped ':' would add a segment
		"fabric.room.=2A",     // decodes to a "*" segment
		"fabric.room.=3E",     // decodes to a ">" segment
		"fabric.room.=0D=0A",  // control characters
		"fabric.room.=FF",     // invalid UTF-8
		"fabric.room.=C3",     // truncated UTF-8
		"fabric.room.=2",      // truncated escape
		"fabric.room.=",       // truncated escape
		"fabric.room.=G0",     // not hex
		"fabric.room.*",       // wildcard token
		"fabric.room.>",       // wildcard token
		"fabric.room.a b",     // whitespace
		"fabric.room.$x",      // raw '$'
		"fabric.room.caf\xc3", // raw non-ASCII
		"fabric." + strings.Repeat("a", MaxTopicLen+1),
	} {
		if topic, err := Unmap("fabric", s); err == nil {
			t.Errorf("Unmap(%q) = %q, want error", s, topic)
		} else if !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("Unmap(%q): %v does not wrap ErrInvalidSubject", s, err)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for _, p := range []string{"fabric", "acme.fabric", "fabric_live", "a-b.c_d.E9"} {
		if err := ValidPrefix(p); err != nil {
			t.Errorf("ValidPrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", "*", ">", "a.*", "a.>", "$SYS", "a b", "a=b", "é"} {
		if err := ValidPrefix(p); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("ValidPrefix(%q) = %v, want ErrInvalidPrefix", p, err)
		}
	}
}

func TestErrorReasonDoesNotEchoInput(t *testing.T) {
	_, err := Map("fabric", "room:\r\nsecret-token")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %v", err)
	}
}

const fuzzPrefix = "fabric"

func checkSubject(t *testing.T, topic, s string) {
	t.Helper()
	if !strings.HasPrefix(s, fuzzPrefix+".") {
		t.Fatalf("Map(%q) = %q: missing prefix", topic, s)
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			t.Fatalf("Map(%q) = %q: bad token %q", topic, s, tok)
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !keep(c) && c != '=' {
				t.Fatalf("Map(%q) = %q: byte %q in token", topic, s, c)
			}
		}
	}
}

func FuzzMap(f *testing.F) {
	for _, s := range []string{
		"room:lobby", "news", "room:eu:42", "room:a.b", "room:*", "room:>", "a::b", "room:",
		"room:\r\nPUB x 1", "room:é", "room:=3D", "room:\xff", "$SYS", "room:\u0085",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		s, err := Map(fuzzPrefix, topic)
		if err != nil {
			if !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("Map(%q): %v does not wrap ErrInvalidTopic", topic, err)
			}
			return
		}
		checkSubject(t, topic, s)
		back, err := Unmap(fuzzPrefix, s)
		if err != nil || back != topic {
			t.Fatalf("Unmap(Map(%q)) = %q, %v", topic, back, err)
		}
	})
}

func FuzzUnmap(f *testing.F) {
	for _, s := range []string{
		"fabric.room.lobby", "fabric.news", "fabric.room.=2A", "fabric.room.=2a", "fabric.room.=61",
		"fabric.room..x", "fabric.room.=C3=A9", "fabric.room.a=3Ab", "fabric", "x.y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, err := Unmap(fuzzPrefix, s)
		if err != nil {
			return
		}
		again, err := Map(fuzzPrefix, topic)
		if err != nil || again != s {
			t.Fatalf("Map(Unmap(%q)) = %q, %v (topic %q)", s, again, err, topic)
		}
	})
}

func BenchmarkMap(b *testing.B) {
	for _, topic := range []string{"room:lobby", "room:eu:user_1234567890", "room:café au lait"} {
		b.Run(topic, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Map("fabric", topic); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
