package auth

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
)

const jwtLike = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"

func TestFromRequest(t *testing.T) {
	std := base64.RawStdEncoding.EncodeToString([]byte("tok+/?>~é"))
	url := base64.RawURLEncoding.EncodeToString([]byte("tok+/?>~é"))
	cases := []struct {
		name       string
		proto      []string
		hdr, query string
		allowQuery bool
		want       string
		reason     string
	}{
		{"subprotocol", []string{"phoenix, " + EncodeSubprotocol(jwtLike)}, "", "", true, jwtLike, ""},
		{"subprotocol no space (node ws)", []string{"phoenix," + EncodeSubprotocol(jwtLike)}, "", "", true, jwtLike, ""},
		{"subprotocol separate header lines", []string{"phoenix", EncodeSubprotocol(jwtLike)}, "", "", true, jwtLike, ""},
		{"subprotocol std alphabet", []string{"phoenix, " + SubprotocolPrefix + std}, "", "", true, "tok+/?>~é", ""},
		{"subprotocol url alphabet", []string{"phoenix, " + SubprotocolPrefix + url}, "", "", true, "tok+/?>~é", ""},
		{"subprotocol padded", []string{"phoenix, " + SubprotocolPrefix + base64.StdEncoding.EncodeToString([]byte("ab"))}, "", "", true, "ab", ""},
		{"subprotocol wins over header", []string{EncodeSubprotocol("A")}, "B", "token=C", true, "A", ""},
		{"header wins over query", []string{"phoenix"}, " B ", "token=C", true, "B", ""},
		{"query", nil, "", "vsn=2.0.0&token=C&token=D", true, "C", ""},
		{"query empty first value", nil, "", "token=&token=D&", true, "D", ""},
		{"query disabled", nil, "", "token=C", false, "", "missing_token"},
		{"nothing", []string{"phoenix"}, "", "vsn=2.0.0&", true, "", "missing_token"},
		{"bad subprotocol base64", []string{"phoenix, " + SubprotocolPrefix + "!!!"}, "B", "", true, "", "invalid_token"},
		{"empty subprotocol token", []string{"phoenix, " + SubprotocolPrefix}, "B", "", true, "", "invalid_token"},
		{"mixed alphabets", []string{SubprotocolPrefix + "ab-c/d"}, "", "", true, "", "invalid_token"},
		{"huge header", nil, strings.Repeat("a", MaxExtractSize+1), "", true, "", "invalid_token"},
		{"huge subprotocol", []string{SubprotocolPrefix + strings.Repeat("a", MaxExtractSize*2)}, "", "", true, "", "invalid_token"},
		{"bad query escapes", nil, "", "token=%zz&token=ok", true, "ok", ""},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/socket/websocket?"+c.query, nil)
		for _, p := range c.proto {
			r.Header.Add("Sec-WebSocket-Protocol", p)
		}
		if c.hdr != "" {
			r.Header.Set(HeaderAuthToken, c.hdr)
		}
		got, err := FromRequest(r, c.allowQuery)
		if got != c.want || Reason(err) != c.reason {
			t.Errorf("%s: got %q, %v; want %q, %q", c.name, got, err, c.want, c.reason)
		}
		if err != nil && c.hdr != "" && len(c.hdr) > 8 && strings.Contains(err.Error(), c.hdr[:8]) {
			t.Errorf("%s: error leaks token", c.name)
		}
	}
	if _, err := FromRequest(nil, true); Reason(err) != "missing_token" {
		t.Error("nil request")
	}
	if tok, err := FromQueryValues([]string{"", "x"}); tok != "x" || err != nil {
		t.Error("FromQueryValues")
	}
}
