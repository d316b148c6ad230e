package auth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzFromRequest: extraction never panics, never returns a token together
// with an error, and a token put in the authToken subprotocol the way
// phoenix.js does comes back byte for byte.
func FuzzFromRequest(f *testing.F) {
	f.Add("phoenix, base64url.bearer.phx.ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZS5z", "", "vsn=2.0.0", "eyJhbGciOiJIUzI1NiJ9.e.s")
	f.Add("phoenix,base64url.bearer.phx.", "raw", "token=a&token=b", "x")
	f.Add("", "", "token=%zz&&token=", "\x00\xff")
	f.Fuzz(func(t *testing.T, proto, hdr, query, tok string) {
		r := &http.Request{Method: "GET", Header: http.Header{}, URL: &url.URL{Path: "/socket/websocket", RawQuery: query}}
		if proto != "" {
			r.Header.Set("Sec-WebSocket-Protocol", proto)
		}
		if hdr != "" {
			r.Header.Set(HeaderAuthToken, hdr)
		}
		for _, allow := range []bool{true, false} {
			got, err := FromRequest(r, allow)
			if (err == nil) == (got == "") {
				t.Fatalf("got %q with err %v", got, err)
			}
			if err != nil && Reason(err) != "missing_token" && Reason(err) != "invalid_token" {
				t.Fatalf("reason %q", Reason(err))
			}
		}
		if tok == "" || len(tok) > MaxExtractSize {
			return
		}
		r.Header.Set("Sec-WebSocket-Protocol", "phoenix, "+EncodeSubprotocol(tok))
		got, err := FromRequest(r, true)
		if err != nil || got != tok {
			t.Fatalf("round trip: got %q, %v; want %q", got, err, tok)
		}
	})
}

// FuzzPatternMatch: ParsePattern and Match never panic; a pattern that is a
// valid topic written literally matches that topic and no longer one.
func FuzzPatternMatch(f *testing.F) {
	f.Add("room:*", "room:lobby", "alice")
	f.Add("game:42:>", "game:42:x:y", "bob")
	f.Add("user:{sub}", "user:alice", "a:b")
	f.Fuzz(func(t *testing.T, pat, topic, sub string) {
		p, err := ParsePattern(pat)
		if err == nil {
			_ = p.Match(topic)
			if q, ok := p.Bind(sub); ok {
				_ = q.Match(topic)
				if p.IsTemplate() && strings.Contains(sub, ":") {
					t.Fatalf("Bind accepted subject %q", sub)
				}
			}
		}
		_ = Literal(topic).Match(topic)
		if !validTopic(topic) {
			return
		}
		lp, err := ParsePattern(topic)
		if err != nil {
			t.Fatalf("valid topic %q does not parse: %v", topic, err)
		}
		if !lp.Match(topic) {
			t.Fatalf("literal pattern %q does not match itself", topic)
		}
		if lp.Match(topic+":x") || lp.Match(topic+"x") {
			t.Fatalf("literal pattern %q matches a longer topic", topic)
		}
		if !Literal(topic).Match(topic) {
			t.Fatalf("Literal(%q) does not match itself", topic)
		}
	})
}

// validTopic is the gateway's topic rule, restated: non-empty segments that
// are not "*" or ">" and hold no wildcard, brace or control byte.
func validTopic(s string) bool {
	if s == "" || len(s) > MaxPatternLen {
		return false
	}
	for _, seg := range strings.Split(s, ":") {
		if seg == "" || strings.ContainsAny(seg, "*>{}") {
			return false
		}
		for i := 0; i < len(seg); i++ {
			if seg[i] < 0x20 || seg[i] == 0x7f {
				return false
			}
		}
	}
	return true
}
