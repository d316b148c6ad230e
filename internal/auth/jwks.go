package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxJWKSBody     = 1 << 20 // bytes read from the JWKS endpoint
	maxJWKSKeys     = 256     // keys kept from one document
	jwksFetchWindow = 10 * time.Second
)

// jwk is one usable verification key from a JWKS document.
type jwk struct {
	alg string // the algorithm the key is for (the JWK's "alg", or implied by its type)
	key crypto.PublicKey
}

// jwksCache is a small JWKS client with these rules:
//   - keys are fetched lazily, on the first Verify that needs one;
//   - a known kid is answered from memory; when the set is older than
//     refresh, a background fetch is started and the cached key is used
//     meanwhile (so a removed key stops verifying after that fetch);
//   - an unknown kid triggers a fetch only if none started within
//     rateLimit; concurrent lookups share the one in-flight fetch;
//   - a caller waits for a fetch no longer than its context and the
//     lookup timeout; the fetch itself runs detached, bounded by
//     jwksFetchWindow, so one impatient caller cannot abort it for others;
//   - a failed fetch keeps the previous keys.
type jwksCache struct {
	url       string
	client    *http.Client
	refresh   time.Duration
	rateLimit time.Duration
	timeout   time.Duration
	now       func() time.Time

	mu        sync.Mutex
	keys      map[string]jwk
	loadedAt  time.Time // last successful fetch
	lastFetch time.Time // start of the last fetch attempt
	inflight  *jwksFetch

	fetches atomic.Int64
}

type jwksFetch struct {
	done chan struct{}
	err  error
}

var (
	errUnknownKid  = errors.New("unknown key id")
	errLookupWait  = errors.New("key lookup timed out")
	errAlgMismatch = errors.New("token alg differs from the key's alg")
)

// lookup returns the key for kid, which must be meant for alg.
func (c *jwksCache) lookup(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		k, ok := c.keys[kid]
		now := c.now()
		if ok {
			if now.Sub(c.loadedAt) >= c.refresh {
				c.startLocked(now) // stale: refresh in the background
			}
			c.mu.Unlock()
			if !algMatches(k.alg, alg) {
				return nil, errAlgMismatch
			}
			return k.key, nil
		}
		if attempt > 0 {
			c.mu.Unlock()
			return nil, errUnknownKid
		}
		f := c.startLocked(now)
		c.mu.Unlock()
		if f == nil {
			return nil, errUnknownKid // rate-limited: no fetch this window
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, errLookupWait
		}
	}
}

func algMatches(keyAlg, tokenAlg string) bool {
	return keyAlg == tokenAlg || (keyAlg == "Ed25519" && tokenAlg == AlgEdDSA)
}

// startLocked returns the in-flight fetch, starts one if the rate limit
// allows, or returns nil. c.mu must be held.
func (c *jwksCache) startLocked(now time.Time) *jwksFetch {
	if c.inflight != nil {
		return c.inflight
	}
	if !c.lastFetch.IsZero() && now.Sub(c.lastFetch) < c.rateLimit {
		return nil
	}
	return c.spawnLocked(now)
}

func (c *jwksCache) spawnLocked(now time.Time) *jwksFetch {
	f := &jwksFetch{done: make(chan struct{})}
	c.inflight = f
	c.lastFetch = now
	go c.run(f)
	return f
}

func (c *jwksCache) run(f *jwksFetch) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchWindow)
	keys, err := c.fetch(ctx)
	cancel()
	c.mu.Lock()
	if err == nil {
		c.keys = keys
		c.loadedAt = c.now()
	}
	f.err = err
	c.inflight = nil
	c.mu.Unlock()
	close(f.done)
}

// forceRefresh fetches now, ignoring the rate limit (operator action or
// startup warm-up), and waits for the result within ctx.
func (c *jwksCache) forceRefresh(ctx context.Context) error {
	c.mu.Lock()
	f := c.inflight
	if f == nil {
		f = c.spawnLocked(c.now())
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *jwksCache) fetch(ctx context.Context) (map[string]jwk, error) {
	c.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("auth: JWKS fetch: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS fetch: %w", err)
	}
	if len(body) > maxJWKSBody {
		return nil, errors.New("auth: JWKS document too large")
	}
	return parseJWKS(body)
}

type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS keeps the usable signature keys of a JWK Set. Keys without a
// valid kid, symmetric ("oct") keys, keys whose "use" is not "sig",
// unsupported types or curves and malformed keys are skipped; the first key
// of a duplicated kid wins.
func parseJWKS(body []byte) (map[string]jwk, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, errors.New("auth: JWKS document is not a JSON key set")
	}
	out := make(map[string]jwk, len(doc.Keys))
	for _, raw := range doc.Keys {
		if len(out) >= maxJWKSKeys {
			break
		}
		var r rawJWK
		if json.Unmarshal(raw, &r) != nil || validKid(r.Kid) != nil {
			continue
		}
		if _, dup := out[r.Kid]; dup {
			continue
		}
		if r.Use != "" && r.Use != "sig" {
			continue
		}
		k, alg, err := r.publicKey()
		if err != nil {
			continue
		}
		if r.Alg != "" {
			alg = r.Alg // a JWK's own alg binds it (D7); a mismatch never verifies
		}
		out[r.Kid] = jwk{alg: alg, key: k}
	}
	return out, nil
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

func (r *rawJWK) publicKey() (crypto.PublicKey, string, error) {
	switch r.Kty {
	case "RSA":
		n, err1 := b64url(r.N)
		e, err2 := b64url(r.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 || len(n) > maxRSABits/8 {
			return nil, "", errors.New("bad RSA JWK")
		}
		ev := new(big.Int).SetBytes(e)
		if ev.Int64() < 3 || ev.Bit(0) == 0 {
			return nil, "", errors.New("bad RSA exponent")
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev.Int64())}
		alg, err := algFor(k)
		return k, alg, err
	case "EC":
		if r.Crv != "P-256" {
			return nil, "", errors.New("unsupported curve")
		}
		x, err1 := b64url(r.X)
		y, err2 := b64url(r.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, "", errors.New("bad EC JWK")
		}
		pt := append(append([]byte{4}, x...), y...)
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
		if err != nil {
			return nil, "", err
		}
		return k, AlgES256, nil
	case "OKP":
		if r.Crv != "Ed25519" {
			return nil, "", errors.New("unsupported curve")
		}
		x, err := b64url(r.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, "", errors.New("bad Ed25519 JWK")
		}
		return ed25519.PublicKey(x), AlgEdDSA, nil
	default: // "oct" and anything else: never from a remote set
		return nil, "", errors.New("unsupported key type")
	}
}
