package auth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

const (
	maxJWKSBody     = 1 << 20 // bytes read from the JWKS endpoint
	maxJWKSKeys     = 256     // keys kept from one document
	jwksFetchWindow = 10 * time.Second
)

// jwksCache is the JWKS client. keyfunc/v3, over a jwkset memory store,
// turns a token's kid into a key and refuses a JWK whose "alg" differs from
// the token's; jwkset parses and validates each JWK. What stays here is when
// to fetch, because keyfunc's own HTTP storage (keyfunc.NewDefaultOverrideCtx)
// fetches synchronously in its constructor, refreshes from a ticker goroutine
// that lives until a context ends, and refetches for an unknown kid inside
// the caller's context behind a wall-clock rate.Limiter. That would block New
// on the network, let one impatient caller abort the fetch every other caller
// waits for (and leave the rest of the rate window without keys), and give
// each Verifier a goroutine it has no Close to stop. So:
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

	store *jwkset.MemoryJWKSet
	kf    keyfunc.Keyfunc

	mu        sync.Mutex
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

func newJWKSCache(url string, client *http.Client, now func() time.Time) (*jwksCache, error) {
	c := &jwksCache{url: url, client: client, now: now, store: jwkset.NewMemoryStorage()}
	kf, err := keyfunc.New(keyfunc.Options{Storage: c.store})
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	c.kf = kf
	return c, nil
}

// lookup returns the key named by t's kid (already validated), which must be
// meant for t's alg.
func (c *jwksCache) lookup(ctx context.Context, t *jwt.Token) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		key, err := c.kf.KeyfuncCtx(ctx)(t)
		found := !errors.Is(err, jwkset.ErrKeyNotFound)
		c.mu.Lock()
		now := c.now()
		if found {
			if now.Sub(c.loadedAt) >= c.refresh {
				c.startLocked(now) // stale: refresh in the background
			}
			c.mu.Unlock()
			if err != nil {
				// keyfunc's only other refusal for a stored key: its "alg"
				// is not the token's ("use" was filtered by parseJWKS).
				return nil, errAlgMismatch
			}
			return key, nil
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
	if err == nil {
		// Replace, not merge: a key removed from the set stops verifying.
		err = c.store.KeyReplaceAll(ctx, slices.Collect(maps.Values(keys)))
	}
	cancel()
	c.mu.Lock()
	if err == nil {
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

// fetch is a plain GET rather than jwkset's HTTP storage: that one reads an
// unbounded body and drops the whole set when one key fails to parse.
func (c *jwksCache) fetch(ctx context.Context) (map[string]jwkset.JWK, error) {
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

// parseJWKS keeps the usable signature keys of a JWK Set, by kid. Keys
// without a valid kid, symmetric ("oct") keys, keys whose "use" is not
// "sig", unsupported types or curves, RSA keys outside 2048..8192 bits and
// keys jwkset finds malformed are skipped, one by one, so one bad entry does
// not cost the others; the first key of a duplicated kid wins. Only public
// material is read, whatever the JWK carries.
func parseJWKS(body []byte) (map[string]jwkset.JWK, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, errors.New("auth: JWKS document is not a JSON key set")
	}
	out := make(map[string]jwkset.JWK, min(len(doc.Keys), maxJWKSKeys))
	for _, raw := range doc.Keys {
		if len(out) >= maxJWKSKeys {
			break
		}
		var jm jwkset.JWKMarshal
		if json.Unmarshal(raw, &jm) != nil || validKid(jm.KID) != nil {
			continue
		}
		if _, dup := out[jm.KID]; dup {
			continue
		}
		if jm.USE != "" && jm.USE != jwkset.UseSig {
			continue
		}
		alg := impliedAlg(jm.KTY, jm.CRV)
		if alg == "" {
			continue
		}
		switch jm.ALG {
		case "":
			// Bind the key to the one algorithm of its type (RFC 8725 §3.1):
			// keyfunc checks a JWK's alg only when it has one.
			jm.ALG = jwkset.ALG(alg)
		case "Ed25519": // RFC 9864's fully specified name for EdDSA over Ed25519
			if alg == AlgEdDSA {
				jm.ALG = jwkset.AlgEdDSA
			}
		}
		j, err := jwkset.NewJWKFromMarshal(jm, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		if a, err := algFor(j.Key()); err != nil || a != alg {
			continue // RSA size bounds, P-256 only
		}
		if k, ok := j.Key().(*rsa.PublicKey); ok && (k.E < 3 || k.E&1 == 0 || k.E > 1<<31-1) {
			continue
		}
		// A JWK's own alg binds it; a token with another alg never verifies.
		out[jm.KID] = j
	}
	return out, nil
}

// impliedAlg is the algorithm a JWK's type and curve can verify, or "" for
// anything else (symmetric keys are never taken from a remote set).
func impliedAlg(kty jwkset.KTY, crv jwkset.CRV) string {
	switch {
	case kty == jwkset.KtyRSA:
		return AlgRS256
	case kty == jwkset.KtyEC && crv == jwkset.CrvP256:
		return AlgES256
	case kty == jwkset.KtyOKP && crv == jwkset.CrvEd25519:
		return AlgEdDSA
	}
	return ""
}
