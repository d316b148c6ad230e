package auth

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults for zero Config fields.
const (
	DefaultLeeway           = 30 * time.Second
	DefaultMaxTokenSize     = 8 << 10
	DefaultJWKSRefresh      = 5 * time.Minute
	DefaultRefreshRateLimit = 1 * time.Minute
	DefaultLookupTimeout    = 2 * time.Second
	defaultHTTPTimeout      = 10 * time.Second
	maxKidLen               = 128
)

// Config selects the key sources and the claim checks. Zero fields take
// the documented defaults.
type Config struct {
	// Secret is the HS256 key (FABRIC_JWT_SECRET); at least 32 bytes.
	// Empty: HS256 is not accepted at all.
	Secret []byte
	// PublicKeyPEMs are PEM public keys (PKIX "PUBLIC KEY", PKCS#1 "RSA
	// PUBLIC KEY" or "CERTIFICATE"): RSA ≥ 2048 bits verifies RS256, EC
	// P-256 verifies ES256, Ed25519 verifies EdDSA. They verify tokens
	// without a kid, and any token when no JWKSURL is set.
	PublicKeyPEMs [][]byte
	// JWKSURL is a JWK Set with rotating keys. Tokens carrying a kid are
	// verified against it.
	JWKSURL string
	// JWKSRefresh is the age after which the key set is refetched
	// (in the background, on the next lookup). Default 5m.
	JWKSRefresh time.Duration
	// RefreshRateLimit is the minimum time between two JWKS fetches of any
	// cause, in particular fetches triggered by an unknown kid. Default 1m;
	// capped at JWKSRefresh.
	RefreshRateLimit time.Duration
	// LookupTimeout bounds how long one Verify waits for a JWKS fetch
	// (in addition to its context). Default 2s.
	LookupTimeout time.Duration
	// Issuer and Audience are required to match when set.
	Issuer, Audience string
	// Leeway is the clock skew tolerated on exp, nbf and iat. Default 30s;
	// negative means none.
	Leeway time.Duration
	// MaxTokenSize rejects longer tokens before any parsing. Default 8 KiB.
	MaxTokenSize int
	// HTTPClient fetches the JWKS. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Verifier checks tokens. It is safe for concurrent use and starts no
// goroutine except a JWKS fetch while one is in flight.
type Verifier struct {
	secret  []byte
	static  map[string][]crypto.PublicKey // by alg
	jwks    *jwksCache
	methods []string
	parser  *jwt.Parser
	maxSize int
}

// New validates cfg and builds a Verifier. With no key source at all it
// returns (nil, ErrNoKeys): the caller decides whether that means anonymous
// mode (development, loopback only) or a startup error. Any other error is a
// configuration mistake (short secret, unreadable or weak key, bad URL).
func New(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && len(cfg.PublicKeyPEMs) == 0 && cfg.JWKSURL == "" {
		return nil, ErrNoKeys
	}
	v := &Verifier{maxSize: cfg.MaxTokenSize}
	if v.maxSize <= 0 {
		v.maxSize = DefaultMaxTokenSize
	}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < minSecretLen {
			return nil, errors.New("auth: Secret must be at least 32 bytes (RFC 8725 §3.5)")
		}
		v.secret = append([]byte(nil), cfg.Secret...)
		v.methods = append(v.methods, AlgHS256)
	}
	if len(cfg.PublicKeyPEMs) > 0 {
		keys, err := parsePublicPEMs(cfg.PublicKeyPEMs)
		if err != nil {
			return nil, err
		}
		v.static = keys
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.JWKSURL != "" {
		if !strings.HasPrefix(cfg.JWKSURL, "https://") && !strings.HasPrefix(cfg.JWKSURL, "http://") {
			return nil, errors.New("auth: JWKSURL must be an http(s) URL")
		}
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: defaultHTTPTimeout}
		}
		c, err := newJWKSCache(cfg.JWKSURL, client, now)
		if err != nil {
			return nil, err
		}
		c.refresh, c.rateLimit, c.timeout = cfg.JWKSRefresh, cfg.RefreshRateLimit, cfg.LookupTimeout
		if c.refresh <= 0 {
			c.refresh = DefaultJWKSRefresh
		}
		if c.rateLimit <= 0 {
			c.rateLimit = DefaultRefreshRateLimit
		}
		c.rateLimit = min(c.rateLimit, c.refresh)
		if c.timeout <= 0 {
			c.timeout = DefaultLookupTimeout
		}
		v.jwks = c
	}
	// The allow-list: asymmetric algorithms only for keys we have.
	for _, alg := range []string{AlgRS256, AlgES256, AlgEdDSA} {
		if len(v.static[alg]) > 0 || v.jwks != nil {
			v.methods = append(v.methods, alg)
		}
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	} else if leeway < 0 {
		leeway = 0
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Methods returns the algorithm allow-list in force.
func (v *Verifier) Methods() []string { return append([]string(nil), v.methods...) }

// Refresh fetches the JWKS now, ignoring the rate limit, and waits for the
// result within ctx. Use it at startup or for a readiness check. Without a
// JWKSURL it does nothing.
func (v *Verifier) Refresh(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.forceRefresh(ctx)
}

// JWKSFetches counts JWKS fetch attempts so far (a metric).
func (v *Verifier) JWKSFetches() int64 {
	if v.jwks == nil {
		return 0
	}
	return v.jwks.fetches.Load()
}

// Claims are the verified contents of a token. Patterns are already bound to
// Subject ("{sub}" replaced).
type Claims struct {
	Subject  string
	Channels []Pattern // claim "channels": topics the client may join
	Publish  []Pattern // claim "publish": topics it may push or publish to
	Channel  string    // claim "channel": a per-join token's one topic
	Type     string    // claim "typ": "connect" (also when absent), "join", "publisher", ...

	Issuer    string
	Audience  []string
	ID        string
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
}

// Token types used by Fabric (claim "typ").
const (
	TypeConnect   = "connect"
	TypeJoin      = "join"
	TypePublisher = "publisher"
)

// IsType reports whether the token is of kind typ. A token without "typ" is a
// connection token, so it is TypeConnect and nothing else (a connection
// token is never accepted as a join or publisher token).
func (c *Claims) IsType(typ string) bool {
	if c.Type == "" {
		return typ == TypeConnect
	}
	return c.Type == typ
}

// CanJoin reports whether the token allows joining topic: a "channels"
// pattern matches, or the topic equals the "channel" claim byte for byte.
func (c *Claims) CanJoin(topic string) bool {
	if c == nil {
		return false
	}
	return (c.Channel != "" && c.Channel == topic) || matchAny(c.Channels, topic)
}

// CanPublish reports whether a "publish" pattern matches topic.
func (c *Claims) CanPublish(topic string) bool {
	if c == nil {
		return false
	}
	return matchAny(c.Publish, topic)
}

// Grants returns the token's grants (the "channel" claim as a literal join
// pattern), to Merge with namespace grants into one Authorizer.
func (c *Claims) Grants() Grants {
	if c == nil {
		return Grants{}
	}
	g := Grants{Join: append([]Pattern(nil), c.Channels...), Publish: append([]Pattern(nil), c.Publish...)}
	if c.Channel != "" {
		g.Join = append(g.Join, Literal(c.Channel))
	}
	return g
}

var _ Authorizer = (*Claims)(nil)

// tokenClaims is the JSON shape of a token's payload.
type tokenClaims struct {
	jwt.RegisteredClaims
	Channels []string `json:"channels,omitempty"`
	Publish  []string `json:"publish,omitempty"`
	Channel  string   `json:"channel,omitempty"`
	Type     string   `json:"typ,omitempty"`
}

// Verify checks token and returns its claims. Every failure is an *Error
// whose Reason is "missing_token", "invalid_token", "token_expired" or
// "token_not_valid_yet"; no error text contains any part of the token.
// Verify waits for a JWKS fetch at most until ctx is done or LookupTimeout
// has passed. A nil Verifier (anonymous mode) rejects every token.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if v == nil {
		return nil, invalid("no verifier configured")
	}
	if token == "" {
		return nil, missing("empty token")
	}
	if err := precheck(token, v.maxSize); err != nil {
		return nil, err
	}
	var tc tokenClaims
	var keyErr error
	keyCalled := false
	_, err := v.parser.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		keyCalled = true
		k, err := v.key(ctx, t)
		keyErr = err
		return k, err
	})
	if err != nil {
		return nil, mapError(err, keyCalled, keyErr)
	}
	return v.claims(&tc)
}

// precheck refuses, without allocating, anything that is not three
// non-empty base64url segments within the size limit.
func precheck(token string, maxSize int) error {
	if len(token) > maxSize {
		return invalid("token too large")
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '.':
			dots++
			if dots > 2 {
				return invalid("malformed token")
			}
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return invalid("malformed token")
		}
	}
	if dots != 2 {
		return invalid("malformed token")
	}
	h, rest, _ := strings.Cut(token, ".")
	p, s, _ := strings.Cut(rest, ".")
	if h == "" || p == "" || s == "" {
		return invalid("malformed token") // includes alg "none" with an empty signature
	}
	return nil
}

func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg() // already on the allow-list (WithValidMethods)
	if _, bad := t.Header["crit"]; bad {
		return nil, errCrit
	}
	kid := ""
	if raw, ok := t.Header["kid"]; ok {
		s, isStr := raw.(string)
		if !isStr {
			return nil, errBadKid
		}
		if err := validKid(s); err != nil {
			return nil, err
		}
		kid = s
	}
	if alg == AlgHS256 {
		return v.secret, nil // never a public key's bytes (HS/RS confusion)
	}
	if kid != "" && v.jwks != nil {
		return v.jwks.lookup(ctx, t)
	}
	keys := v.static[alg]
	switch len(keys) {
	case 0:
		if v.jwks != nil {
			return nil, errKidRequired
		}
		return nil, errNoKeyForAlg
	case 1:
		return keys[0], nil
	default:
		set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
		for i, k := range keys {
			set.Keys[i] = k
		}
		return set, nil
	}
}

// Key lookup failures; their text is fixed and becomes the error detail.
var (
	errBadKid      = errors.New("malformed kid")
	errCrit        = errors.New("crit header not supported")
	errKidRequired = errors.New("kid required with a JWKS")
	errNoKeyForAlg = errors.New("no key for this algorithm")
	keyErrors      = []error{errBadKid, errCrit, errKidRequired, errNoKeyForAlg, errUnknownKid, errLookupWait, errAlgMismatch}
)

// validKid accepts 1..128 printable ASCII characters without '/', '\',
// quotes or "..": a kid is an opaque name, never a path or markup.
func validKid(kid string) error {
	if kid == "" || len(kid) > maxKidLen {
		return errBadKid
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if c <= 0x20 || c >= 0x7f || c == '/' || c == '\\' || c == '"' || c == '\'' {
			return errBadKid
		}
	}
	if strings.Contains(kid, "..") {
		return errBadKid
	}
	return nil
}

// mapError turns a jwt error into one of ours with a fixed detail; jwt's
// own text is dropped because it may quote the token.
func mapError(err error, keyCalled bool, keyErr error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed token")
	case !keyCalled && (errors.Is(err, jwt.ErrTokenSignatureInvalid) || errors.Is(err, jwt.ErrTokenUnverifiable)):
		return invalid("algorithm not allowed")
	case keyErr != nil:
		for _, known := range keyErrors {
			if keyErr == known {
				return invalid(known.Error()) // fixed text, never token bytes
			}
		}
		return invalid("no usable key")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return invalid("bad signature")
	}
	// Claim validation: a wrong issuer, audience or missing claim wins over
	// timing, so a client is not told to "refresh" a token that can never pass.
	switch {
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid("required claim missing")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return invalid("wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid("wrong audience")
	case errors.Is(err, jwt.ErrTokenExpired):
		return expired("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return notValidYet("nbf in the future")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return notValidYet("iat in the future")
	}
	return invalid("invalid claims")
}

func (v *Verifier) claims(tc *tokenClaims) (*Claims, error) {
	c := &Claims{
		Subject:  tc.Subject,
		Channel:  tc.Channel,
		Type:     tc.Type,
		Issuer:   tc.Issuer,
		Audience: tc.Audience,
		ID:       tc.ID,
	}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	if tc.IssuedAt != nil {
		c.IssuedAt = tc.IssuedAt.Time
	}
	if tc.NotBefore != nil {
		c.NotBefore = tc.NotBefore.Time
	}
	var err error
	if c.Channels, err = parseBound(tc.Channels, c.Subject); err != nil {
		return nil, invalid("bad channels claim")
	}
	if c.Publish, err = parseBound(tc.Publish, c.Subject); err != nil {
		return nil, invalid("bad publish claim")
	}
	return c, nil
}

func parseBound(ss []string, sub string) ([]Pattern, error) {
	ps, err := ParsePatterns(ss)
	if err != nil {
		return nil, err
	}
	return bindAll(ps, sub), nil
}
