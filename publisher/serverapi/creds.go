package serverapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"

	"github.com/fabric-rt/fabric/auth"
)

// Scope is what one credential may do: per RPC family, the topic patterns
// it may touch (auth patterns: "room:*", "game:>", literal topics), and
// whether it may call the admin RPCs (Disconnect, Unsubscribe, Revoke,
// ClearChannel, RemoveMessage).
type Scope struct {
	Publish  []auth.Pattern
	Presence []auth.Pattern // Presence, PresenceStats, Channels
	History  []auth.Pattern
	Admin    bool
}

// Full is the scope of an unscoped credential: every topic, every RPC.
func Full() Scope {
	all := []auth.Pattern{auth.MustParsePattern(">")}
	return Scope{Publish: all, Presence: all, History: all, Admin: true}
}

// Principal is an authenticated caller: a name for the audit log and its
// scope. The name never contains a secret ("key:<name>", "jwt:<sub>").
type Principal struct {
	Name  string
	Scope Scope
}

// KeySpec is one API key as configured (the keys file, docs/api.md). The
// key is given as its SHA-256 in hex (recommended: the file then holds no
// secret) or, for development, in clear.
type KeySpec struct {
	Name     string   `yaml:"name"`
	SHA256   string   `yaml:"sha256"`
	Key      string   `yaml:"key"`
	Publish  []string `yaml:"publish"`
	Presence []string `yaml:"presence"`
	History  []string `yaml:"history"`
	Admin    bool     `yaml:"admin"`
}

// LoadKeys reads a keys file: a YAML document {keys: [KeySpec...]}.
func LoadKeys(path string) ([]KeySpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	var doc struct {
		Keys []KeySpec `yaml:"keys"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("api keys %s: %w", path, err)
	}
	if len(doc.Keys) == 0 {
		return nil, fmt.Errorf("api keys %s: no keys", path)
	}
	return doc.Keys, nil
}

// HashKey is the form a key is stored in: hex SHA-256. API keys are random
// strings of at least 128 bits, so an unsalted fast hash is enough (no
// dictionary to try); it keeps the secret out of files and memory dumps.
func HashKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

type keyEntry struct {
	sum [sha256.Size]byte
	p   Principal
}

// Verifier checks publisher JWTs (auth.Verifier).
type Verifier interface {
	Verify(ctx context.Context, token string) (*auth.Claims, error)
}

// Credentials authenticates API callers: API keys and publisher JWTs.
type Credentials struct {
	keys []keyEntry
	jwt  Verifier // nil: no JWTs
	open bool     // no keys, no JWTs: development mode, every caller is "anonymous" with Full scope

	rate  rate.Limit
	burst int
	mu    sync.Mutex
	lims  map[string]*rate.Limiter
}

// CredentialsConfig configures NewCredentials.
type CredentialsConfig struct {
	Keys []KeySpec
	// FullKeys are unscoped keys given in clear (--publish-api-keys): they
	// keep today's meaning, publish to any topic, and nothing else.
	PublishKeys []string
	// JWT verifies publisher JWTs (typ "publisher"); nil: none.
	JWT Verifier
	// Open, with no keys and no JWT, lets every request in with Full
	// scope (anonymous development mode; the app allows it on loopback
	// only).
	Open bool
	// Rate is the requests per second one credential may make (burst
	// twice that, at least 1); 0: unlimited. Open mode is not limited.
	Rate float64
}

// NewCredentials checks every key and pattern.
func NewCredentials(cfg CredentialsConfig) (*Credentials, error) {
	c := &Credentials{jwt: cfg.JWT, lims: map[string]*rate.Limiter{}}
	if cfg.Rate > 0 {
		c.rate, c.burst = rate.Limit(cfg.Rate), int(max(1, 2*cfg.Rate))
	}
	names := map[string]bool{}
	for i, k := range cfg.Keys {
		if k.Name == "" {
			return nil, fmt.Errorf("api key %d: name is required (it names the caller in the audit log)", i)
		}
		if names[k.Name] {
			return nil, fmt.Errorf("api key %q: name given twice", k.Name)
		}
		names[k.Name] = true
		var e keyEntry
		switch {
		case k.SHA256 != "" && k.Key != "":
			return nil, fmt.Errorf("api key %q: give sha256 or key, not both", k.Name)
		case k.SHA256 != "":
			b, err := hex.DecodeString(k.SHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("api key %q: sha256 must be 64 hex digits", k.Name)
			}
			copy(e.sum[:], b)
		case len(k.Key) >= 16:
			e.sum = sha256.Sum256([]byte(k.Key))
		default:
			return nil, fmt.Errorf("api key %q: sha256 (recommended) or a key of at least 16 characters is required", k.Name)
		}
		s, err := scopeOf(k.Publish, k.Presence, k.History, k.Admin)
		if err != nil {
			return nil, fmt.Errorf("api key %q: %w", k.Name, err)
		}
		e.p = Principal{Name: "key:" + k.Name, Scope: s}
		c.keys = append(c.keys, e)
	}
	for i, k := range cfg.PublishKeys {
		if k == "" {
			continue
		}
		c.keys = append(c.keys, keyEntry{sum: sha256.Sum256([]byte(k)),
			p: Principal{Name: fmt.Sprintf("publish-key:%d", i), Scope: Scope{Publish: Full().Publish}}})
	}
	c.open = cfg.Open && len(c.keys) == 0 && cfg.JWT == nil
	return c, nil
}

func scopeOf(publish, presence, history []string, admin bool) (Scope, error) {
	var s Scope
	var err error
	if s.Publish, err = auth.ParsePatterns(publish); err != nil {
		return s, fmt.Errorf("publish: %w", err)
	}
	if s.Presence, err = auth.ParsePatterns(presence); err != nil {
		return s, fmt.Errorf("presence: %w", err)
	}
	if s.History, err = auth.ParsePatterns(history); err != nil {
		return s, fmt.Errorf("history: %w", err)
	}
	s.Admin = admin
	return s, nil
}

// Errors of Authenticate.
var (
	ErrUnauthenticated = errors.New("missing or unknown credentials")
	ErrNotPublisher    = errors.New(`this token is not a publisher token (typ "publisher")`)
	ErrRateLimited     = errors.New("too many requests for these credentials")
)

// Authenticate finds the caller of a request from its Authorization
// header ("Bearer <key or JWT>"), and spends one request of its rate.
func (c *Credentials) Authenticate(ctx context.Context, h http.Header) (*Principal, error) {
	p, err := c.identify(ctx, h)
	if err != nil {
		return nil, err
	}
	// Anonymous development mode has no credential to limit (and only
	// listens on loopback).
	if !c.open && !c.allow(p.Name) {
		return p, ErrRateLimited
	}
	return p, nil
}

func (c *Credentials) identify(ctx context.Context, h http.Header) (*Principal, error) {
	scheme, tok, ok := strings.Cut(h.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		if c.open {
			return &Principal{Name: "anonymous", Scope: Full()}, nil
		}
		return nil, ErrUnauthenticated
	}
	if c.open {
		return &Principal{Name: "anonymous", Scope: Full()}, nil
	}
	// Every key is compared, in constant time, through its SHA-256 (so
	// not even the length leaks).
	got := sha256.Sum256([]byte(tok))
	found := -1
	for i := range c.keys {
		if subtle.ConstantTimeCompare(got[:], c.keys[i].sum[:]) == 1 {
			found = i
		}
	}
	if found >= 0 {
		p := c.keys[found].p
		return &p, nil
	}
	if c.jwt == nil || strings.Count(tok, ".") != 2 {
		return nil, ErrUnauthenticated
	}
	vctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl, err := c.jwt.Verify(vctx, tok)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	if !cl.IsType(auth.TypePublisher) {
		return nil, ErrNotPublisher
	}
	s, err := jwtScope(tok, cl)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	name := "jwt:" + cl.Subject
	if cl.ID != "" {
		name += "#" + cl.ID
	}
	return &Principal{Name: name, Scope: s}, nil
}

// jwtScope reads the scope claims of a verified publisher token: publish
// (auth already parsed it, bound to sub), presence, history and admin. A
// token with none of them keeps the meaning publisher tokens had before
// scopes: publish to any topic, nothing else.
func jwtScope(tok string, cl *auth.Claims) (Scope, error) {
	// The signature is verified: reading the payload again for the claims
	// auth.Claims does not carry is safe.
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Scope{}, err
	}
	var extra struct {
		Publish  *[]string `json:"publish"`
		Presence []string  `json:"presence"`
		History  []string  `json:"history"`
		Admin    bool      `json:"admin"`
	}
	if err := json.Unmarshal(raw, &extra); err != nil {
		return Scope{}, err
	}
	if extra.Publish == nil && extra.Presence == nil && extra.History == nil && !extra.Admin {
		return Scope{Publish: Full().Publish}, nil
	}
	s, err := scopeOf(nil, extra.Presence, extra.History, extra.Admin)
	if err != nil {
		return Scope{}, err
	}
	s.Publish = cl.Publish
	return s, nil
}

// maxLimiters bounds the per-credential limiters kept; past it they are
// forgotten all at once (each starts with a full burst again): credentials
// are configured keys and signed tokens, so the set is small in practice.
const maxLimiters = 10000

func (c *Credentials) allow(name string) bool {
	if c.rate == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lims[name]
	if l == nil {
		if len(c.lims) >= maxLimiters {
			clear(c.lims)
		}
		l = rate.NewLimiter(c.rate, c.burst)
		c.lims[name] = l
	}
	return l.Allow()
}

// Kinds of scope an RPC needs.
type need int

const (
	needPublish need = iota
	needPresence
	needHistory
	needAdmin
	needAny
)

// ErrForbidden wraps every out-of-scope refusal.
var ErrForbidden = errors.New("permission denied")

// check reports whether the scope allows the RPC on every topic; one topic
// out of scope refuses the whole request.
func (p *Principal) check(n need, topics ...string) error {
	var ps []auth.Pattern
	switch n {
	case needAny:
		return nil
	case needAdmin:
		if !p.Scope.Admin {
			return fmt.Errorf("%w: %s may not call admin RPCs (admin: true)", ErrForbidden, p.Name)
		}
		return nil
	case needPublish:
		ps = p.Scope.Publish
	case needPresence:
		ps = p.Scope.Presence
	case needHistory:
		ps = p.Scope.History
	}
	for _, t := range topics {
		if !matchAny(ps, t) {
			return fmt.Errorf("%w: %s may not %s %q", ErrForbidden, p.Name, verb(n), t)
		}
	}
	return nil
}

func verb(n need) string {
	switch n {
	case needPublish:
		return "publish to"
	case needPresence:
		return "read the presence of"
	default:
		return "read the history of"
	}
}

func matchAny(ps []auth.Pattern, topic string) bool {
	for _, p := range ps {
		if p.Match(topic) {
			return true
		}
	}
	return false
}

// covers reports whether every topic pattern pat can match is matched by
// one of ps (Channels' pattern against the presence scope).
func covers(ps []auth.Pattern, pat string) bool {
	for _, p := range ps {
		if coversOne(strings.Split(p.String(), ":"), strings.Split(pat, ":")) {
			return true
		}
	}
	return false
}

func coversOne(scope, pat []string) bool {
	for i, s := range scope {
		if s == ">" {
			return len(pat) > i
		}
		if i >= len(pat) {
			return false
		}
		switch {
		case s == "*":
			if pat[i] == ">" {
				return false
			}
		case s != pat[i]:
			return false
		}
	}
	return len(pat) == len(scope)
}
