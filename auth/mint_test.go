package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMintRoundTrip(t *testing.T) {
	k := tk(t)
	cfg := Config{Secret: testSecret, Issuer: "fabric-dev", Audience: "fabric"}
	pemCfg := cfg
	pemCfg.Secret = nil
	pemCfg.PublicKeyPEMs = [][]byte{pubPEM(t, &k.rsa.PublicKey), pubPEM(t, &k.ec.PublicKey), pubPEM(t, k.ed.Public())}
	cases := []struct {
		name string
		cfg  Config
		priv []byte
	}{
		{"HS256", cfg, nil},
		{"RS256", pemCfg, privPEM(t, k.rsa)},
		{"ES256", pemCfg, privPEM(t, k.ec)},
		{"EdDSA", pemCfg, privPEM(t, k.ed)},
	}
	for _, c := range cases {
		v := mustNew(t, c.cfg)
		for i := range 50 {
			tok, err := Mint(c.cfg, MintClaims{Subject: "alice", Channels: []string{"room:*", "user:{sub}"},
				Publish: []string{"room:lobby"}, Type: TypeConnect, TTL: time.Minute, PrivateKeyPEM: c.priv})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			enc := base64.RawStdEncoding.EncodeToString([]byte(tok))
			if strings.ContainsAny(enc, "/") {
				t.Fatalf("%s: subprotocol encoding contains '/'", c.name)
			}
			if i > 0 {
				continue
			}
			// As phoenix.js sends it.
			r := httptest.NewRequest("GET", "/socket/websocket?vsn=2.0.0", nil)
			r.Header.Set("Sec-WebSocket-Protocol", "phoenix, "+SubprotocolPrefix+enc)
			got, err := FromRequest(r, false)
			if err != nil || got != tok {
				t.Fatalf("%s: FromRequest: %v", c.name, err)
			}
			cl, err := v.Verify(context.Background(), got)
			if err != nil {
				t.Fatalf("%s: Verify: %v", c.name, err)
			}
			if cl.Subject != "alice" || !cl.CanJoin("user:alice") || cl.CanJoin("user:bob") || !cl.CanJoin("room:x") ||
				!cl.CanPublish("room:lobby") || cl.CanPublish("room:x") || !cl.IsType(TypeConnect) || cl.ID == "" ||
				cl.Issuer != "fabric-dev" || len(cl.Audience) != 1 {
				t.Fatalf("%s: claims %+v", c.name, cl)
			}
		}
	}
}

func TestMintErrors(t *testing.T) {
	k := tk(t)
	for name, c := range map[string]struct {
		cfg Config
		mc  MintClaims
	}{
		"no key":        {Config{}, MintClaims{Subject: "a"}},
		"short secret":  {Config{Secret: []byte("short")}, MintClaims{Subject: "a"}},
		"bad pattern":   {Config{Secret: testSecret}, MintClaims{Channels: []string{"a::b"}}},
		"bad kid":       {Config{Secret: testSecret}, MintClaims{Kid: "../x"}},
		"negative ttl":  {Config{Secret: testSecret}, MintClaims{TTL: -time.Second}},
		"public as key": {Config{}, MintClaims{PrivateKeyPEM: pubPEM(t, &k.rsa.PublicKey)}},
		"garbage PEM":   {Config{}, MintClaims{PrivateKeyPEM: []byte("nope")}},
		"P-384 key":     {Config{}, MintClaims{PrivateKeyPEM: privPEM(t, k.ec384)}},
	} {
		if _, err := Mint(c.cfg, c.mc); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
}

func TestNewConfig(t *testing.T) {
	k := tk(t)
	if v, err := New(Config{}); v != nil || !errors.Is(err, ErrNoKeys) {
		t.Fatalf("New(empty) = %v, %v", v, err)
	}
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, cfg := range map[string]Config{
		"short secret":   {Secret: []byte("0123456789")},
		"private as pub": {PublicKeyPEMs: [][]byte{privPEM(t, k.rsa)}},
		"no PEM":         {PublicKeyPEMs: [][]byte{[]byte("hello")}},
		"RSA 1024":       {PublicKeyPEMs: [][]byte{pubPEM(t, &weak.PublicKey)}},
		"P-384":          {PublicKeyPEMs: [][]byte{pubPEM(t, &p384.PublicKey)}},
		"JWKS not http":  {JWKSURL: "file:///etc/passwd"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	v := mustNew(t, Config{PublicKeyPEMs: [][]byte{pubPEM(t, &k.ec.PublicKey)}})
	if got := strings.Join(v.Methods(), ","); got != "ES256" {
		t.Fatalf("methods %s", got)
	}
	v = mustNew(t, Config{Secret: testSecret, JWKSURL: "http://127.0.0.1:1/jwks"})
	if got := strings.Join(v.Methods(), ","); got != "HS256,RS256,ES256,EdDSA" {
		t.Fatalf("methods %s", got)
	}
}

func TestReason(t *testing.T) {
	if Reason(nil) != "" || Reason(errors.New("x")) != "invalid_token" || Reason(ErrTokenExpired) != "token_expired" ||
		Reason(ErrNotValidYet) != "token_not_valid_yet" || Reason(ErrMissingToken) != "missing_token" {
		t.Fatal("Reason")
	}
	if !errors.Is(invalid("x"), ErrInvalidToken) || errors.Is(invalid("x"), ErrTokenExpired) || errors.Is(ErrInvalidToken, invalid("x")) {
		t.Fatal("Is")
	}
}

// The production code must never reference the "none" escape hatch (RFC 8725 §3.2).
func TestNoUnsafeNone(t *testing.T) {
	for _, f := range []string{"verifier.go", "jwks.go", "mint.go", "keys.go", "extract.go", "pattern.go", "errors.go"} {
		b := readFile(t, f)
		if strings.Contains(string(b), "UnsafeAllowNone") || strings.Contains(string(b), "SigningMethodNone") {
			t.Errorf("%s references alg none", f)
		}
	}
}
