package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// testKeys are generated once per test binary (RSA generation is slow
// under -race).
type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec, ec2   *ecdsa.PrivateKey
	ec384     *ecdsa.PrivateKey
	ed, ed2   ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func tk(t testing.TB) *testKeys {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		keys.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
		k2, e := rsa.GenerateKey(rand.Reader, 2048)
		must(e)
		keys.rsa2 = k2
		keys.ec, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		keys.ec2, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		keys.ec384, e = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(e)
		_, keys.ed, e = ed25519.GenerateKey(rand.Reader)
		must(e)
		_, keys.ed2, e = ed25519.GenerateKey(rand.Reader)
		must(e)
		if err != nil {
			panic(err)
		}
	})
	return &keys
}

func pubPEM(t testing.TB, k crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func privPEM(t testing.TB, k crypto.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

var t0 = time.Unix(1_900_000_000, 0)

type m = map[string]any

// sign builds a token with the given header additions and claims.
func sign(t testing.TB, method jwt.SigningMethod, key any, hdr, claims m) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	for k, v := range hdr {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// good returns valid claims at time now.
func good(now time.Time) m {
	return m{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "channels": []string{"room:*"}}
}

func with(c m, kv ...any) m {
	out := m{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// raw assembles a token from literal JSON texts and a signature segment.
func raw(header, payload, sig string) string { return b64(header) + "." + b64(payload) + "." + sig }

// jwksServer serves a mutable JWK Set and counts hits.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	doc  []byte
	// block, when non-nil, makes the handler wait for it (or the request's end).
	block chan struct{}
}

func newJWKSServer(t testing.TB, jwks ...m) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(jwks...)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		doc, block := s.doc, s.block
		s.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	s.Start() // httptest listens on 127.0.0.1
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(jwks ...m) {
	doc, _ := json.Marshal(m{"keys": jwks})
	s.mu.Lock()
	s.doc = doc
	s.mu.Unlock()
}

func bigB64(b *big.Int) string { return base64.RawURLEncoding.EncodeToString(b.Bytes()) }

func rsaJWK(kid, alg string, k *rsa.PublicKey) m {
	j := m{"kty": "RSA", "kid": kid, "n": bigB64(k.N), "e": bigB64(big.NewInt(int64(k.E)))}
	if alg != "" {
		j["alg"] = alg
	}
	return j
}

func ecJWK(kid, alg string, k *ecdsa.PublicKey) m {
	b, _ := k.Bytes() // uncompressed point 04||X||Y
	j := m{"kty": "EC", "crv": "P-256", "kid": kid,
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]), "y": base64.RawURLEncoding.EncodeToString(b[33:])}
	if alg != "" {
		j["alg"] = alg
	}
	return j
}

func edJWK(kid, alg string, k ed25519.PublicKey) m {
	j := m{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64.RawURLEncoding.EncodeToString(k)}
	if alg != "" {
		j["alg"] = alg
	}
	return j
}

func octJWK(kid string, secret []byte) m {
	return m{"kty": "oct", "kid": kid, "k": base64.RawURLEncoding.EncodeToString(secret), "alg": "HS256"}
}

func mustNew(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
