package serverapi

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fabric-rt/fabric/auth"
)

const secret = "an-hs256-test-secret-of-32-bytes!"

func sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearerHeader(tok string) http.Header {
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return h
}

// Publisher JWTs carry their scope in claims; without any, they keep the
// old meaning (publish anywhere, nothing else); a connection token is not
// a publisher token.
func TestJWTScopes(t *testing.T) {
	v, err := auth.New(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCredentials(CredentialsConfig{JWT: v})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scoped := sign(t, jwt.MapClaims{"sub": "svc", "jti": "j1", "typ": "publisher", "publish": []string{"room:{sub}"},
		"presence": []string{"room:*"}, "history": []string{"game:>"}, "admin": true})
	p, err := c.Authenticate(ctx, bearerHeader(scoped))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "jwt:svc#j1" {
		t.Fatalf("name %q", p.Name)
	}
	for _, cse := range []struct {
		n     need
		topic string
		ok    bool
	}{
		{needPublish, "room:svc", true}, {needPublish, "room:other", false},
		{needPresence, "room:x", true}, {needPresence, "game:x", false},
		{needHistory, "game:1:2", true}, {needHistory, "room:x", false},
		{needAdmin, "", true},
	} {
		if err := p.check(cse.n, cse.topic); (err == nil) != cse.ok {
			t.Errorf("need %d on %q: %v, want ok=%v", cse.n, cse.topic, err, cse.ok)
		}
	}
	legacy := sign(t, jwt.MapClaims{"sub": "svc", "typ": "publisher"})
	p, err = c.Authenticate(ctx, bearerHeader(legacy))
	if err != nil {
		t.Fatal(err)
	}
	if p.check(needPublish, "anything:at:all") != nil || p.check(needHistory, "room:x") == nil || p.check(needAdmin) == nil {
		t.Fatalf("an unscoped publisher token: %+v", p.Scope)
	}
	conn := sign(t, jwt.MapClaims{"sub": "player", "channels": []string{"room:*"}})
	if _, err := c.Authenticate(ctx, bearerHeader(conn)); !errors.Is(err, ErrNotPublisher) {
		t.Fatalf("a connection token: %v", err)
	}
	expired := sign(t, jwt.MapClaims{"sub": "svc", "typ": "publisher", "exp": time.Now().Add(-time.Hour).Unix()})
	for _, tok := range []string{"", expired, "a.b.c", scoped + "x"} {
		if _, err := c.Authenticate(ctx, bearerHeader(tok)); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("token %.20q: %v", tok, err)
		}
	}
}

// Channels' pattern must be covered whole by a presence pattern.
func TestCovers(t *testing.T) {
	ps, _ := auth.ParsePatterns([]string{"room:*", "game:>", "lobby"})
	for pat, want := range map[string]bool{
		"room:*": true, "room:x": true, "room:>": false, ">": false, "*": false, "room:x:y": false,
		"game:>": true, "game:1:*": true, "game": false, "lobby": true, "lobby:x": false,
	} {
		if got := covers(ps, pat); got != want {
			t.Errorf("covers(%q) = %v, want %v", pat, got, want)
		}
	}
}

// Keys: hashed or clear, names required and unique, bad hashes refused.
func TestKeySpecs(t *testing.T) {
	for _, bad := range [][]KeySpec{
		{{SHA256: HashKey("k")}},
		{{Name: "a", SHA256: "zz"}},
		{{Name: "a", Key: "short"}},
		{{Name: "a", Key: "long-enough-key-123", SHA256: HashKey("x")}},
		{{Name: "a", Key: "long-enough-key-123"}, {Name: "a", Key: "long-enough-key-456"}},
		{{Name: "a", Key: "long-enough-key-123", Publish: []string{"room::x"}}},
	} {
		if _, err := NewCredentials(CredentialsConfig{Keys: bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	c, err := NewCredentials(CredentialsConfig{Keys: []KeySpec{{Name: "h", SHA256: HashKey("hashed-key-0123456789")}, {Name: "c", Key: "clear-key-0123456789"}},
		PublishKeys: []string{"legacy-key-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	for key, name := range map[string]string{"hashed-key-0123456789": "key:h", "clear-key-0123456789": "key:c", "legacy-key-0123456789": "publish-key:0"} {
		p, err := c.Authenticate(context.Background(), bearerHeader(key))
		if err != nil || p.Name != name {
			t.Errorf("%s: %v %v", name, p, err)
		}
	}
	if _, err := c.Authenticate(context.Background(), bearerHeader("hashed-key-012345678")); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a near miss: %v", err)
	}
}
