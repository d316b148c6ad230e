package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// verifiers used by the corpus.
type corpusEnv struct {
	clk   *clock
	hs    *Verifier // Secret only
	pk    *Verifier // PEM RSA + EC + Ed25519 only
	mixed *Verifier // Secret + PEM RSA
	jwks  *Verifier // JWKS only
	claim *Verifier // Secret, with Issuer and Audience
	srv   *jwksServer
	hc    *http.Client
}

func newCorpusEnv(t *testing.T) *corpusEnv {
	k := tk(t)
	e := &corpusEnv{clk: newClock(t0), hc: &http.Client{Timeout: 5 * time.Second}}
	e.srv = newJWKSServer(t,
		rsaJWK("rsa1", "RS256", &k.rsa.PublicKey),
		rsaJWK("ps1", "PS256", &k.rsa2.PublicKey),
		ecJWK("ec1", "", &k.ec.PublicKey),
		edJWK("ed1", "EdDSA", k.ed.Public().(ed25519.PublicKey)),
		octJWK("oct1", testSecret),
	)
	now := e.clk.Now
	e.hs = mustNew(t, Config{Secret: testSecret, Now: now})
	e.pk = mustNew(t, Config{PublicKeyPEMs: [][]byte{pubPEM(t, &k.rsa.PublicKey), pubPEM(t, &k.ec.PublicKey), pubPEM(t, k.ed.Public())}, Now: now})
	e.mixed = mustNew(t, Config{Secret: testSecret, PublicKeyPEMs: [][]byte{pubPEM(t, &k.rsa.PublicKey)}, Now: now})
	e.jwks = mustNew(t, Config{JWKSURL: e.srv.URL, HTTPClient: e.hc, Now: now})
	e.claim = mustNew(t, Config{Secret: testSecret, Issuer: "https://issuer.example", Audience: "fabric", Now: now})
	if err := e.jwks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

type corpusCase struct {
	name   string
	v      *Verifier
	token  string
	reason string
}

func buildCorpus(t *testing.T, e *corpusEnv) []corpusCase {
	k := tk(t)
	now := e.clk.Now()
	L := DefaultLeeway
	g := good(now)
	hs := func(c m) string { return sign(t, jwt.SigningMethodHS256, testSecret, nil, c) }
	rs := func(hdr, c m) string { return sign(t, jwt.SigningMethodRS256, k.rsa, hdr, c) }
	valid := hs(g)
	vh, vrest, _ := strings.Cut(valid, ".")
	vp, vs, _ := strings.Cut(vrest, ".")
	other := hs(with(g, "sub", "mallory"))
	_, orest, _ := strings.Cut(other, ".")
	_, os, _ := strings.Cut(orest, ".")
	gJSON := `{"sub":"alice","iat":` + itoa(now.Unix()) + `,"exp":` + itoa(now.Add(time.Hour).Unix()) + `}`
	noneTok := func(alg string) string { return raw(`{"alg":"`+alg+`","typ":"JWT"}`, gJSON, "") }
	rsaPEM := pubPEM(t, &k.rsa.PublicKey)
	kidTok := func(kid any) string { return rs(m{"kid": kid}, g) }
	inv, exp, nyv, mis := "invalid_token", "token_expired", "token_not_valid_yet", "missing_token"
	hsHeader := b64(`{"alg":"HS256","typ":"JWT"}`)
	sigHS := func(h, p string) string { // HS256 signature over literal segments
		s, _ := jwt.SigningMethodHS256.Sign(h+"."+p, testSecret)
		return h + "." + p + "." + b64(string(s))
	}
	litHS := func(payload string) string { return sigHS(hsHeader, b64(payload)) }

	return []corpusCase{
		{"empty", e.hs, "", mis},
		// alg none and friends: 401 invalid_token
		{"none empty sig/hs", e.hs, noneTok("none"), inv},
		{"none empty sig/pk", e.pk, noneTok("none"), inv},
		{"none empty sig/jwks", e.jwks, noneTok("none"), inv},
		{"none with sig", e.hs, raw(`{"alg":"none"}`, gJSON, b64("sig")), inv},
		{"None capitalised", e.hs, raw(`{"alg":"None"}`, gJSON, b64("x")), inv},
		{"nOnE", e.pk, raw(`{"alg":"nOnE"}`, gJSON, b64("x")), inv},
		{"no alg header", e.hs, raw(`{"typ":"JWT"}`, gJSON, b64("x")), inv},
		{"alg empty", e.hs, raw(`{"alg":""}`, gJSON, b64("x")), inv},
		{"alg number", e.hs, raw(`{"alg":256}`, gJSON, b64("x")), inv},
		{"alg with space", e.pk, raw(`{"alg":"RS256 "}`, gJSON, b64("x")), inv},
		// key confusion (an HS256 token keyed with the RS256 public key) and the allow-list
		{"HS256 keyed with RSA PEM/pk", e.pk, sign(t, jwt.SigningMethodHS256, rsaPEM, nil, g), inv},
		{"HS256 keyed with RSA PEM/mixed", e.mixed, sign(t, jwt.SigningMethodHS256, rsaPEM, nil, g), inv},
		{"HS256 keyed with RSA PEM/jwks", e.jwks, sign(t, jwt.SigningMethodHS256, rsaPEM, m{"kid": "rsa1"}, g), inv},
		{"HS256 right secret, no secret configured", e.pk, hs(g), inv},
		{"RS256 when only secret", e.hs, rs(nil, g), inv},
		{"ES256 when only secret", e.hs, sign(t, jwt.SigningMethodES256, k.ec, nil, g), inv},
		{"EdDSA when only secret", e.hs, sign(t, jwt.SigningMethodEdDSA, k.ed, nil, g), inv},
		{"HS384", e.hs, sign(t, jwt.SigningMethodHS384, testSecret, nil, g), inv},
		{"HS512", e.hs, sign(t, jwt.SigningMethodHS512, testSecret, nil, g), inv},
		{"RS512", e.pk, sign(t, jwt.SigningMethodRS512, k.rsa, nil, g), inv},
		{"PS256 vs PEM", e.pk, sign(t, jwt.SigningMethodPS256, k.rsa, nil, g), inv},
		{"ES384", e.pk, sign(t, jwt.SigningMethodES384, k.ec384, nil, g), inv},
		{"HS256 with oct JWK secret", e.jwks, sign(t, jwt.SigningMethodHS256, testSecret, m{"kid": "oct1"}, g), inv},
		// kid
		{"unknown kid", e.jwks, kidTok("nope"), inv},
		{"kid 129 bytes", e.jwks, kidTok(strings.Repeat("k", 129)), inv},
		{"kid 4 KB", e.jwks, kidTok(strings.Repeat("k", 4000)), inv},
		{"kid 10 KB", e.jwks, kidTok(strings.Repeat("k", 10000)), inv},
		{"kid ../", e.jwks, kidTok("../../etc/passwd"), inv},
		{"kid ..", e.jwks, kidTok("a..b"), inv},
		{"kid slash", e.jwks, kidTok("keys/rsa1"), inv},
		{"kid double quote", e.jwks, kidTok(`rsa1"`), inv},
		{"kid single quote", e.jwks, kidTok(`rsa1' OR '1'='1`), inv},
		{"kid backslash", e.jwks, kidTok(`rsa1\`), inv},
		{"kid NUL", e.jwks, kidTok("rsa1\x00"), inv},
		{"kid space", e.jwks, kidTok("rsa 1"), inv},
		{"kid newline", e.jwks, kidTok("rsa1\nX-Injected: 1"), inv},
		{"kid unicode", e.jwks, kidTok("rsa1\u202e"), inv},
		{"kid empty", e.jwks, kidTok(""), inv},
		{"kid number", e.jwks, kidTok(7), inv},
		{"kid object", e.jwks, kidTok(m{"a": 1}), inv},
		{"no kid with JWKS only", e.jwks, rs(nil, g), inv},
		{"crit header", e.pk, rs(m{"crit": []string{"exp"}}, g), inv},
		{"jku ignored", e.jwks, sign(t, jwt.SigningMethodRS256, k.rsa2, m{"kid": "evil", "jku": "http://127.0.0.1:1/jwks"}, g), inv},
		{"embedded jwk ignored", e.pk, sign(t, jwt.SigningMethodRS256, k.rsa2, m{"jwk": rsaJWK("x", "RS256", &k.rsa2.PublicKey)}, g), inv},
		// JWK alg binding: a token's alg must be its JWK's
		{"PS256 token vs RS256 JWK", e.jwks, sign(t, jwt.SigningMethodPS256, k.rsa, m{"kid": "rsa1"}, g), inv},
		{"RS256 token vs PS256 JWK", e.jwks, sign(t, jwt.SigningMethodRS256, k.rsa2, m{"kid": "ps1"}, g), inv},
		{"ES256 token vs RSA JWK", e.jwks, sign(t, jwt.SigningMethodES256, k.ec, m{"kid": "rsa1"}, g), inv},
		{"EdDSA token vs EC JWK", e.jwks, sign(t, jwt.SigningMethodEdDSA, k.ed, m{"kid": "ec1"}, g), inv},
		{"RS256 with oct kid", e.jwks, rs(m{"kid": "oct1"}, g), inv},
		// time: exp, nbf and iat at the edges of the leeway
		{"expired leeway+1s", e.hs, hs(with(g, "exp", now.Add(-L-time.Second).Unix())), exp},
		{"expired long ago", e.hs, hs(with(g, "exp", now.Add(-48*time.Hour).Unix(), "iat", now.Add(-49*time.Hour).Unix())), exp},
		{"exp negative", e.hs, hs(with(g, "exp", -1, "iat", nil)), exp},
		{"nbf future leeway+1s", e.hs, hs(with(g, "nbf", now.Add(L+time.Second).Unix())), nyv},
		{"iat future leeway+1s", e.hs, hs(with(g, "iat", now.Add(L+time.Second).Unix())), nyv},
		{"iat far future", e.pk, rs(nil, with(g, "iat", now.Add(24*time.Hour).Unix(), "exp", now.Add(48*time.Hour).Unix())), nyv},
		{"missing exp", e.hs, hs(with(g, "exp", nil)), inv},
		{"exp null", e.hs, litHS(`{"sub":"alice","exp":null}`), inv},
		{"exp string", e.hs, hs(with(g, "exp", "tomorrow")), inv},
		{"exp bool", e.hs, hs(with(g, "exp", true)), inv},
		// iss / aud
		{"wrong aud", e.claim, hs(with(g, "iss", "https://issuer.example", "aud", "other")), inv},
		{"wrong aud array", e.claim, hs(with(g, "iss", "https://issuer.example", "aud", []string{"x", "y"})), inv},
		{"missing aud", e.claim, hs(with(g, "iss", "https://issuer.example")), inv},
		{"wrong iss", e.claim, hs(with(g, "iss", "https://evil.example", "aud", "fabric")), inv},
		{"missing iss", e.claim, hs(with(g, "aud", "fabric")), inv},
		{"wrong aud and expired", e.claim, hs(with(g, "iss", "https://issuer.example", "aud", "other", "exp", now.Add(-time.Hour).Unix())), inv},
		// structure and encoding
		{"1 segment", e.hs, vh, inv},
		{"2 segments", e.hs, vh + "." + vp, inv},
		{"4 segments", e.hs, valid + "." + vs, inv},
		{"empty payload", e.hs, vh + ".." + vs, inv},
		{"bad base64 char", e.hs, vh + "!." + vp + "." + vs, inv},
		{"std alphabet +/", e.hs, vh + "." + vp + "+/." + vs, inv},
		{"padding", e.hs, vh + "=." + vp + "." + vs, inv},
		{"non-canonical base64", e.hs, vh + "." + vp[:len(vp)-1] + flip(vp[len(vp)-1]) + "." + vs, inv},
		{"64 KiB token", e.hs, vh + "." + strings.Repeat("A", 64<<10) + "." + vs, inv},
		{"100000 dots", e.hs, strings.Repeat(".", 100000), inv},
		{"8 KiB + 1", e.hs, vh + "." + strings.Repeat("A", DefaultMaxTokenSize-len(vh)-len(vs)-1) + "." + vs, inv},
		{"leading space", e.hs, " " + valid, inv},
		{"trailing newline", e.hs, valid + "\n", inv},
		{"Bearer prefix", e.hs, "Bearer " + valid, inv},
		{"fullwidth dot", e.hs, vh + "\uff0e" + vp + "." + vs, inv},
		{"zero-width space", e.hs, vh + "." + vp + "\u200b." + vs, inv},
		{"NUL inside", e.hs, vh + "\x00." + vp + "." + vs, inv},
		{"header not JSON", e.hs, sigHS(b64("not json"), vp), inv},
		{"header JSON array", e.hs, sigHS(b64(`["HS256"]`), vp), inv},
		// signature
		{"truncated signature", e.hs, valid[:len(valid)-4], inv},
		{"signature emptied", e.hs, vh + "." + vp + ".", inv},
		{"signature of another token", e.hs, vh + "." + vp + "." + os, inv},
		{"payload tampered", e.hs, vh + "." + b64(`{"sub":"root","exp":9999999999}`) + "." + vs, inv},
		{"other secret", e.hs, sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes!!"), nil, g), inv},
		{"other RSA key", e.pk, sign(t, jwt.SigningMethodRS256, k.rsa2, nil, g), inv},
		{"other EC key", e.pk, sign(t, jwt.SigningMethodES256, k.ec2, nil, g), inv},
		{"other Ed25519 key", e.pk, sign(t, jwt.SigningMethodEdDSA, k.ed2, nil, g), inv},
		{"other key, known kid", e.jwks, sign(t, jwt.SigningMethodRS256, k.rsa2, m{"kid": "rsa1"}, g), inv},
		// claims shape
		{"claims array", e.hs, litHS(`[1,2,3]`), inv},
		{"claims string", e.hs, litHS(`"alice"`), inv},
		{"claims number", e.hs, litHS(`42`), inv},
		{"claims null", e.hs, litHS(`null`), inv},
		{"claims truncated JSON", e.hs, litHS(`{"sub":"alice","exp":`), inv},
		{"channels string", e.hs, hs(with(g, "channels", "room:*")), inv},
		{"channels numbers", e.hs, hs(with(g, "channels", []int{1, 2})), inv},
		{"channels bad pattern", e.hs, hs(with(g, "channels", []string{"room:**"})), inv},
		{"channels empty segment", e.hs, hs(with(g, "channels", []string{"room::x"})), inv},
		{"publish object", e.hs, hs(with(g, "publish", m{"room:*": true})), inv},
		{"publish > in middle", e.hs, hs(with(g, "publish", []string{"room:>:x"})), inv},
		{"sub number", e.hs, hs(with(g, "sub", 42)), inv},
		{"typ number", e.hs, hs(with(g, "typ", 1)), inv},
		{"channel array", e.hs, hs(with(g, "channel", []string{"a"})), inv},
		{"aud number", e.claim, hs(with(g, "iss", "https://issuer.example", "aud", 5)), inv},
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// flip changes a base64url character so the decoded bytes stay the same
// length but the unused low bits are set (non-canonical) or differ.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestCorpusRejected(t *testing.T) {
	base := runtime.NumGoroutine()
	e := newCorpusEnv(t)
	cases := buildCorpus(t, e)
	if len(cases) < 60 {
		t.Fatalf("corpus has %d cases, want at least 60", len(cases))
	}
	accepted := 0
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		cl, err := c.v.Verify(ctx, c.token)
		cancel()
		if err == nil {
			accepted++
			t.Errorf("%s: accepted (sub %q)", c.name, cl.Subject)
			continue
		}
		if got := Reason(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
		}
		var ae *Error
		if !errors.As(err, &ae) {
			t.Errorf("%s: error %T is not *auth.Error", c.name, err)
		}
		assertNoTokenLeak(t, c.name, err.Error(), c.token)
		t.Logf("%-40s %v", c.name, err)
	}
	if accepted != 0 {
		t.Fatalf("%d of %d malicious tokens accepted", accepted, len(cases))
	}
	t.Logf("%d corpus cases, 0 accepted", len(cases))

	e.srv.Close()
	e.hc.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d after corpus, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// assertNoTokenLeak fails if msg holds any 8+ byte piece of a token segment.
func assertNoTokenLeak(t *testing.T, name, msg, token string) {
	t.Helper()
	for _, seg := range strings.Split(token, ".") {
		if len(seg) < 8 {
			continue
		}
		for i := 0; i+8 <= len(seg) && i < 4096; i += 4 {
			if strings.Contains(msg, seg[i:i+8]) {
				t.Errorf("%s: error %q contains part of the token", name, msg)
				return
			}
		}
	}
}

// Positive controls: the boundaries the corpus rejects just beyond.
func TestCorpusPositiveControls(t *testing.T) {
	e := newCorpusEnv(t)
	k := tk(t)
	now := e.clk.Now()
	L := DefaultLeeway
	g := good(now)
	hs := func(c m) string { return sign(t, jwt.SigningMethodHS256, testSecret, nil, c) }
	cases := []struct {
		name  string
		v     *Verifier
		token string
	}{
		{"HS256", e.hs, hs(g)},
		{"expired leeway-1s", e.hs, hs(with(g, "exp", now.Add(-L+time.Second).Unix(), "iat", now.Add(-time.Hour).Unix()))},
		{"nbf leeway-1s", e.hs, hs(with(g, "nbf", now.Add(L-time.Second).Unix()))},
		{"iat leeway-1s", e.hs, hs(with(g, "iat", now.Add(L-time.Second).Unix()))},
		{"no iat", e.hs, hs(with(g, "iat", nil))},
		{"RS256 PEM", e.pk, sign(t, jwt.SigningMethodRS256, k.rsa, nil, g)},
		{"ES256 PEM", e.pk, sign(t, jwt.SigningMethodES256, k.ec, nil, g)},
		{"EdDSA PEM", e.pk, sign(t, jwt.SigningMethodEdDSA, k.ed, nil, g)},
		{"PEM with a kid", e.pk, sign(t, jwt.SigningMethodRS256, k.rsa, m{"kid": "whatever"}, g)},
		{"mixed HS256", e.mixed, hs(g)},
		{"mixed RS256", e.mixed, sign(t, jwt.SigningMethodRS256, k.rsa, nil, g)},
		{"JWKS RS256", e.jwks, sign(t, jwt.SigningMethodRS256, k.rsa, m{"kid": "rsa1"}, g)},
		{"JWKS ES256 (JWK without alg)", e.jwks, sign(t, jwt.SigningMethodES256, k.ec, m{"kid": "ec1"}, g)},
		{"JWKS EdDSA", e.jwks, sign(t, jwt.SigningMethodEdDSA, k.ed, m{"kid": "ed1"}, g)},
		{"iss+aud", e.claim, hs(with(g, "iss", "https://issuer.example", "aud", []string{"x", "fabric"}))},
	}
	for _, c := range cases {
		cl, err := c.v.Verify(context.Background(), c.token)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if cl.Subject != "alice" || !cl.CanJoin("room:lobby") || cl.CanJoin("room:a:b") || cl.CanPublish("room:lobby") {
			t.Errorf("%s: claims %+v", c.name, cl)
		}
	}
}
