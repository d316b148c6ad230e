package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
)

// fakeGate refuses with whatever it is set to, and remembers what it was
// asked.
type fakeGate struct {
	mu     sync.Mutex
	reason string
	until  time.Time
	sub    string
	jti    uint64
	iat    time.Time
}

func (f *fakeGate) Refusal(sub string, jti uint64, iat time.Time) (string, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sub, f.jti, f.iat = sub, jti, iat
	return f.reason, f.until
}

func (f *fakeGate) set(reason string, until time.Time) {
	f.mu.Lock()
	f.reason, f.until = reason, until
	f.mu.Unlock()
}

// The gate is asked at the upgrade (with the token's sub, jti and iat)
// and at every join; each refusal has its documented status, and an
// unread list fails closed.
func TestGateRefusesUpgradesAndJoins(t *testing.T) {
	secret := []byte("gate-test-secret-0123456789abcdef!")
	v, err := auth.New(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	gate := &fakeGate{}
	g, err := New(Config{Broker: memory.New(), WS: ws.Config{Loops: 1},
		Auth: AuthConfig{Verifier: v, AllowQueryToken: true, Gate: gate}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	issued := time.Now().Add(-time.Minute).Truncate(time.Second)
	tok, err := auth.Mint(auth.Config{Secret: secret}, auth.MintClaims{Subject: "alice", Channels: []string{"room:*"}, Now: issued})
	if err != nil {
		t.Fatal(err)
	}
	req := func() *http.Request { return httptest.NewRequest("GET", PathWebSocket+"?vsn=2.0.0&token="+tok, nil) }

	for _, c := range []struct {
		reason     string
		until      time.Time
		status     int
		retryAfter int
	}{
		{ReasonBanned, time.Now().Add(90 * time.Second), http.StatusForbidden, 91},
		{ReasonRevoked, time.Time{}, http.StatusUnauthorized, 0},
		{ReasonGateUnknown, time.Time{}, http.StatusServiceUnavailable, 1},
	} {
		gate.set(c.reason, c.until)
		_, _, _, ref := g.admit(req(), false)
		if ref == nil || ref.status != c.status || ref.reason != c.reason || (c.retryAfter != 0 && (ref.retryAfter < c.retryAfter-2 || ref.retryAfter > c.retryAfter)) {
			t.Fatalf("gate says %q: refusal %+v, want %d with Retry-After ~%d", c.reason, ref, c.status, c.retryAfter)
		}
	}
	gate.set("", time.Time{})
	pol, _, release, ref := g.admit(req(), false)
	if ref != nil {
		t.Fatalf("admitted token refused: %+v", ref)
	}
	defer release()
	if gate.sub != "alice" || gate.jti == 0 || !gate.iat.Equal(issued) {
		t.Fatalf("gate asked about sub %q jti %d iat %v; want alice, the jti, %v", gate.sub, gate.jti, gate.iat, issued)
	}
	if !pol.CanJoin("room:1") {
		t.Fatal("join refused with nothing revoked")
	}
	jt, err := auth.Mint(auth.Config{Secret: secret}, auth.MintClaims{Subject: "alice", Type: auth.TypeJoin, Channel: "vip:1"})
	if err != nil {
		t.Fatal(err)
	}
	if !pol.CanJoinWithToken("vip:1", jt) {
		t.Fatal("per-join token refused with nothing revoked")
	}
	gate.set(ReasonRevoked, time.Time{})
	if pol.CanJoin("room:1") {
		t.Fatal("join allowed after the connection's token was revoked")
	}
	if pol.CanJoinWithToken("vip:1", jt) {
		t.Fatal("a per-join token let a connection whose token was revoked join")
	}
}
