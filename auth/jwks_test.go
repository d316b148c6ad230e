package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newJWKSVerifier(t *testing.T, srv *jwksServer, clk *clock, lookup time.Duration) (*Verifier, *http.Client) {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	v := mustNew(t, Config{JWKSURL: srv.URL, HTTPClient: hc, Now: clk.Now, LookupTimeout: lookup})
	return v, hc
}

func rsTok(t *testing.T, clk *clock, kid string, key any) string {
	t.Helper()
	return sign(t, jwt.SigningMethodRS256, key, m{"kid": kid}, good(clk.Now()))
}

// waitIdle waits for an in-flight background fetch to finish.
func waitIdle(t *testing.T, v *Verifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		v.jwks.mu.Lock()
		busy := v.jwks.inflight != nil
		v.jwks.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("JWKS fetch still in flight")
}

// A new kid is accepted after one refresh; a removed kid is rejected
// once the cache has refreshed.
func TestJWKSRotation(t *testing.T) {
	k := tk(t)
	clk := newClock(t0)
	srv := newJWKSServer(t, rsaJWK("k1", "RS256", &k.rsa.PublicKey))
	v, _ := newJWKSVerifier(t, srv, clk, 0)
	ctx := context.Background()

	if _, err := v.Verify(ctx, rsTok(t, clk, "k1", k.rsa)); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if h := srv.hits.Load(); h != 1 {
		t.Fatalf("hits after first verify = %d, want 1 (lazy first fetch)", h)
	}

	// Publish k2 (before signing with it), then use it. Within the rate
	// window the unknown kid cannot trigger a fetch...
	srv.set(rsaJWK("k1", "RS256", &k.rsa.PublicKey), rsaJWK("k2", "RS256", &k.rsa2.PublicKey))
	clk.Add(10 * time.Second)
	if _, err := v.Verify(ctx, rsTok(t, clk, "k2", k.rsa2)); Reason(err) != "invalid_token" {
		t.Fatalf("k2 inside rate window: %v", err)
	}
	if h := srv.hits.Load(); h != 1 {
		t.Fatalf("hits = %d, want 1 (rate-limited)", h)
	}
	// ...after it, exactly one refresh makes k2 valid.
	clk.Add(DefaultRefreshRateLimit)
	if _, err := v.Verify(ctx, rsTok(t, clk, "k2", k.rsa2)); err != nil {
		t.Fatalf("k2 after refresh: %v", err)
	}
	if h := srv.hits.Load(); h != 2 {
		t.Fatalf("hits = %d, want 2", h)
	}

	// Remove k1. It stays valid until the set is stale and refreshed.
	srv.set(rsaJWK("k2", "RS256", &k.rsa2.PublicKey))
	if _, err := v.Verify(ctx, rsTok(t, clk, "k1", k.rsa)); err != nil {
		t.Fatalf("k1 before refresh: %v", err)
	}
	clk.Add(DefaultJWKSRefresh)
	// Stale: answered from cache, refresh started in the background.
	_, _ = v.Verify(ctx, rsTok(t, clk, "k1", k.rsa))
	waitIdle(t, v)
	if h := srv.hits.Load(); h != 3 {
		t.Fatalf("hits = %d, want 3", h)
	}
	_, err := v.Verify(ctx, rsTok(t, clk, "k1", k.rsa))
	if Reason(err) != "invalid_token" {
		t.Fatalf("removed k1 after refresh: %v", err)
	}
	if _, err := v.Verify(ctx, rsTok(t, clk, "k2", k.rsa2)); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
}

// 1,000 tokens with random well-formed kids cause at most one fetch
// per rate window; malformed kids cause none.
func TestJWKSUnknownKidBurst(t *testing.T) {
	k := tk(t)
	clk := newClock(t0)
	srv := newJWKSServer(t, rsaJWK("k1", "RS256", &k.rsa.PublicKey))
	v, _ := newJWKSVerifier(t, srv, clk, 0)
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Pre-sign outside the burst (RSA signing is slow under -race).
	toks := make([]string, 1000)
	for i := range toks {
		var b [8]byte
		_, _ = rand.Read(b[:])
		toks[i] = rsTok(t, clk, "kid-"+hex.EncodeToString(b[:]), k.rsa)
	}
	burst := func() {
		var wg sync.WaitGroup
		work := make(chan string)
		for range 32 {
			wg.Go(func() {
				for tok := range work {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					if _, err := v.Verify(ctx, tok); Reason(err) != "invalid_token" {
						t.Errorf("random kid: %v", err)
					}
					cancel()
				}
			})
		}
		for _, tok := range toks {
			work <- tok
		}
		close(work)
		wg.Wait()
	}
	before := srv.hits.Load()
	burst() // inside the window opened by Refresh: no fetch at all
	if d := srv.hits.Load() - before; d != 0 {
		t.Fatalf("burst inside window: %d fetches, want 0", d)
	}
	for w := 1; w <= 3; w++ {
		clk.Add(DefaultRefreshRateLimit)
		before = srv.hits.Load()
		burst()
		if d := srv.hits.Load() - before; d > 1 {
			t.Fatalf("window %d: %d fetches for 1000 unknown kids, want ≤ 1", w, d)
		}
	}
	// Malformed kids never reach the cache, even with the window open.
	clk.Add(DefaultRefreshRateLimit)
	before = srv.hits.Load()
	for _, kid := range []string{"../x", "a/b", `"`, "\x00", string(make([]byte, 200))} {
		if _, err := v.Verify(context.Background(), rsTok(t, clk, kid, k.rsa)); Reason(err) != "invalid_token" {
			t.Fatalf("kid %q: %v", kid, err)
		}
	}
	if d := srv.hits.Load() - before; d != 0 {
		t.Fatalf("malformed kids caused %d fetches", d)
	}
	if got := v.JWKSFetches(); got != srv.hits.Load() {
		t.Fatalf("JWKSFetches = %d, server saw %d", got, srv.hits.Load())
	}
}

// A slow JWKS server does not make Verify wait past its deadline
// (the context's, or LookupTimeout), and the detached fetch ends cleanly.
func TestJWKSSlowServer(t *testing.T) {
	base := runtime.NumGoroutine()
	k := tk(t)
	clk := newClock(t0)
	srv := newJWKSServer(t, rsaJWK("k1", "RS256", &k.rsa.PublicKey))
	release := make(chan struct{})
	srv.mu.Lock()
	srv.block = release
	srv.mu.Unlock()
	v, hc := newJWKSVerifier(t, srv, clk, 150*time.Millisecond)
	tok := rsTok(t, clk, "k1", k.rsa)

	// 1. Caller deadline shorter than LookupTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	start := time.Now()
	_, err := v.Verify(ctx, tok)
	cancel()
	if Reason(err) != "invalid_token" {
		t.Fatalf("slow server: %v", err)
	}
	// Generous bound: the point is "not the server's 30 s", not a timing claim.
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Verify waited %v", el)
	}
	// 2. No caller deadline: LookupTimeout bounds the wait; the same fetch is
	// shared (no second request).
	start = time.Now()
	_, err = v.Verify(context.Background(), tok)
	if Reason(err) != "invalid_token" {
		t.Fatalf("slow server, no deadline: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Verify waited %v", el)
	}
	if h := srv.hits.Load(); h != 1 {
		t.Fatalf("hits = %d, want 1 shared fetch", h)
	}
	// The server answers at last: the fetch completes and k1 works.
	close(release)
	waitIdle(t, v)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the slow fetch completed: %v", err)
	}
	srv.Close()
	hc.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("goroutines %d > baseline %d", n, base)
	}
}

func TestJWKSParse(t *testing.T) {
	k := tk(t)
	doc := []byte(`{"keys":[
		{"kty":"oct","kid":"s","k":"c2VjcmV0"},
		{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
		{"kty":"RSA","kid":"weak","n":"AQAB","e":"AQAB"},
		{"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"},
		{"kty":"EC","kid":"offcurve","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"kty":"OKP","kid":"x25519","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"kty":"RSA","kid":"../bad","n":"AQAB","e":"AQAB"},
		"not an object",
		` + string(mustJSON(rsaJWK("good", "RS256", &k.rsa.PublicKey))) + `,
		` + string(mustJSON(rsaJWK("good", "RS256", &k.rsa2.PublicKey))) + `
	]}`)
	keys, err := parseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("kept %d keys, want only \"good\": %v", len(keys), keys)
	}
	if _, ok := keys["good"]; !ok {
		t.Fatal("good key missing")
	}
	for _, bad := range []string{``, `[]`, `{"keys":{}}`, `nope`} {
		if _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%q) accepted", bad)
		}
	}
}

func mustJSON(v any) []byte {
	b, err := jsonMarshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// What jwkset and keyfunc change in how a JWK Set is read, pinned so an
// upgrade of either cannot change it silently: padded base64url members are
// tolerated, private members are never kept, key_ops and x5u are validated,
// and a JWK without "alg" still verifies only its type's algorithm.
func TestJWKSParseByJwkset(t *testing.T) {
	k := tk(t)
	padded := rsaJWK("padded", "RS256", &k.rsa.PublicKey)
	padded["n"] = padded["n"].(string) + "==" // 256-byte modulus: two pad characters
	priv := ecJWK("ecpriv", "ES256", &k.ec.PublicKey)
	d, err := k.ec.Bytes() // the private scalar, fixed length for P-256
	if err != nil {
		t.Fatal(err)
	}
	priv["d"] = base64.RawURLEncoding.EncodeToString(d)
	badOps := rsaJWK("badops", "RS256", &k.rsa.PublicKey)
	badOps["key_ops"] = []string{"launch"}
	httpX5U := rsaJWK("x5u", "RS256", &k.rsa.PublicKey)
	httpX5U["x5u"] = "http://127.0.0.1:1/cert.pem"
	keys, err := parseJWKS(mustJSON(m{"keys": []m{padded, priv, badOps, httpX5U}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keys["padded"]; !ok {
		t.Error("padded base64url modulus refused")
	}
	if j, ok := keys["ecpriv"]; !ok {
		t.Error("EC JWK with a private member refused")
	} else if _, pub := j.Key().(*ecdsa.PublicKey); !pub {
		t.Errorf("EC JWK with a private member kept as %T, want *ecdsa.PublicKey", j.Key())
	}
	for _, kid := range []string{"badops", "x5u"} {
		if _, ok := keys[kid]; ok {
			t.Errorf("%s: kept", kid)
		}
	}

	clk := newClock(t0)
	srv := newJWKSServer(t,
		rsaJWK("rsa-noalg", "", &k.rsa.PublicKey),
		edJWK("ed-new", "Ed25519", k.ed.Public().(ed25519.PublicKey)),
	)
	v, _ := newJWKSVerifier(t, srv, clk, 0)
	ctx := context.Background()
	if _, err := v.Verify(ctx, rsTok(t, clk, "rsa-noalg", k.rsa)); err != nil {
		t.Fatalf("RS256 with an RSA JWK without alg: %v", err)
	}
	_, err = v.Verify(ctx, sign(t, jwt.SigningMethodES256, k.ec, m{"kid": "rsa-noalg"}, good(clk.Now())))
	if Reason(err) != "invalid_token" || !strings.Contains(err.Error(), errAlgMismatch.Error()) {
		t.Fatalf("ES256 token against an RSA JWK without alg: %v, want %q", err, errAlgMismatch)
	}
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodEdDSA, k.ed, m{"kid": "ed-new"}, good(clk.Now()))); err != nil {
		t.Fatalf(`EdDSA token against a JWK with alg "Ed25519": %v`, err)
	}
}
