package gateway

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A per-address budget counts an IPv6 client by its /64: one host holds a
// whole /64, and counting its addresses one by one would bound nothing.
func TestSourceKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:1234":                "192.0.2.7",
		"[2001:db8:1:2:aaaa::1]:443":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:1:2:3]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":         "192.0.2.7",
		"[fe80::1%eth0]:80":             "fe80::/64",
		"not an address":                "not an address",
	} {
		if got := sourceKey(&http.Request{RemoteAddr: addr}); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

// Bad credentials spend only their own address's budget, which refills.
func TestFailureBudget(t *testing.T) {
	var f failures
	t0 := time.Unix(1000, 0)
	for range 4 {
		if f.blocked("a", 2, 4, t0) {
			t.Fatal("blocked before spending the burst")
		}
		f.fail("a", 2, 4, t0)
	}
	if !f.blocked("a", 2, 4, t0) {
		t.Fatal("not blocked after the burst")
	}
	if f.blocked("b", 2, 4, t0) {
		t.Fatal("another address blocked")
	}
	if f.blocked("a", 2, 4, t0.Add(time.Second)) {
		t.Fatal("still blocked after a second at 2/s")
	}
	if f.blocked("a", 0, 0, t0) {
		t.Fatal("blocked with the budget off")
	}
}

// A flood of refusals writes one line per interval, then says how many it
// left out.
func TestSampledLog(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	var s sampledLog
	for range 1000 {
		s.log(l, "connection refused", "reason", "invalid_token")
	}
	if n := strings.Count(buf.String(), "connection refused"); n != 1 {
		t.Fatalf("%d lines for 1000 refusals, want 1", n)
	}
	s.next.Store(0) // the interval has passed
	s.log(l, "connection refused")
	if !strings.Contains(buf.String(), "suppressed_since_last=999") {
		t.Fatalf("second line does not count the suppressed ones: %s", buf.String())
	}
}

// Users' counts: connections and LongPoll sessions are capped, the entry
// goes with the last connection.
func TestUserBudget(t *testing.T) {
	var u users
	lim := &Limits{MaxConnectionsPerUser: 3, MaxLongPollPerUser: 1}
	a, why := u.acquire("alice", true, lim)
	if why != "" {
		t.Fatal(why)
	}
	if _, why := u.acquire("alice", true, lim); why != "too_many_longpoll_sessions_for_user" {
		t.Fatalf("second LongPoll session: %q", why)
	}
	b, _ := u.acquire("alice", false, lim)
	c, _ := u.acquire("alice", false, lim)
	if _, why := u.acquire("alice", false, lim); why != "too_many_connections_for_user" {
		t.Fatalf("fourth connection: %q", why)
	}
	if _, why := u.acquire("bob", false, lim); why != "" {
		t.Fatalf("another user refused: %q", why)
	}
	u.release("alice", a, true)
	u.release("alice", b, false)
	u.release("alice", c, false)
	if _, ok := u.m["alice"]; ok {
		t.Fatal("entry kept after the last connection")
	}
}

// Anonymous mode's default: same origin only, and a browser on the
// server's machine must have used a loopback name (no DNS rebinding).
func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		remote, host, origin string
		ok                   bool
	}{
		{"127.0.0.1:5000", "127.0.0.1:4000", "", true},
		{"127.0.0.1:5000", "127.0.0.1:4000", "http://127.0.0.1:4000", true},
		{"127.0.0.1:5000", "localhost:4000", "http://localhost:4000", true},
		{"[::1]:5000", "[::1]:4000", "http://[::1]:4000", true},
		{"127.0.0.1:5000", "127.0.0.1:4000", "https://evil.example", false},
		{"127.0.0.1:5000", "127.0.0.1:4000", "http://127.0.0.1:3000", false},
		{"127.0.0.1:5000", "rebound.example:4000", "http://rebound.example:4000", false},
		{"192.0.2.9:5000", "demo.example:4000", "http://demo.example:4000", true},
		{"192.0.2.9:5000", "demo.example:4000", "http://other.example:4000", false},
		{"127.0.0.1:5000", "127.0.0.1:4000", "null", false},
	} {
		r := &http.Request{RemoteAddr: c.remote, Host: c.host}
		if got := sameOrigin(r, c.origin); got != c.ok {
			t.Errorf("remote %s Host %s Origin %q: %v, want %v", c.remote, c.host, c.origin, got, c.ok)
		}
	}
}
