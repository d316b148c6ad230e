package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultMintTTL is the lifetime of a minted token when MintClaims.TTL is 0.
const DefaultMintTTL = time.Hour

// maxMintAttempts bounds the re-mint loop in Mint.
const maxMintAttempts = 32

// MintClaims describes a development token (fabric token).
type MintClaims struct {
	Subject  string
	Channels []string // patterns the holder may join
	Publish  []string // patterns it may push or publish to
	Channel  string   // one topic, for a per-join token
	Type     string   // "typ" claim; empty for a connection token
	TTL      time.Duration
	// Kid, when set, goes in the header (a key published in a JWKS).
	Kid string
	// PrivateKeyPEM signs with RS256, ES256 or EdDSA according to the key
	// (PKCS#8, PKCS#1 or SEC 1). Empty: HS256 with Config.Secret.
	PrivateKeyPEM []byte
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Mint signs a token from c, taking iss and aud from cfg. It sets iat, exp
// and a random jti. Patterns are checked so Verify will accept them.
//
// The token is meant to be usable as a phoenix.js authToken, which travels
// as standard base64 in Sec-WebSocket-Protocol, where '/' is not allowed
// (phoenix.js 1.8: base64url.bearer.phx.<token> as a subprotocol). For a compact JWT (only [A-Za-z0-9_.-]) the
// encoding cannot produce '/' or '+': those need an input byte whose low six
// bits are 0x3e or 0x3f, i.e. '>', '?', '~' or non-ASCII. Mint nevertheless
// checks and, should it ever happen (a future change of encoding), re-mints
// with a fresh jti, at most 32 times, then fails.
func Mint(cfg Config, c MintClaims) (string, error) {
	if c.Kid != "" {
		if err := validKid(c.Kid); err != nil {
			return "", errors.New("auth: invalid kid")
		}
	}
	for _, list := range [][]string{c.Channels, c.Publish} {
		if _, err := ParsePatterns(list); err != nil {
			return "", err
		}
	}
	var method jwt.SigningMethod
	var key any
	switch {
	case len(c.PrivateKeyPEM) > 0:
		k, alg, err := parsePrivatePEM(c.PrivateKeyPEM)
		if err != nil {
			return "", err
		}
		method, key = jwt.GetSigningMethod(alg), k
	case len(cfg.Secret) >= minSecretLen:
		method, key = jwt.SigningMethodHS256, cfg.Secret
	case len(cfg.Secret) > 0:
		return "", errors.New("auth: Secret must be at least 32 bytes (RFC 8725 §3.5)")
	default:
		return "", errors.New("auth: Mint needs a Secret or a PrivateKeyPEM")
	}
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultMintTTL
	}
	if ttl < 0 {
		return "", errors.New("auth: negative TTL")
	}
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    cfg.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Channels: c.Channels,
		Publish:  c.Publish,
		Channel:  c.Channel,
		Type:     c.Type,
	}
	if cfg.Audience != "" {
		tc.Audience = jwt.ClaimStrings{cfg.Audience}
	}
	for range maxMintAttempts {
		var id [12]byte
		_, _ = rand.Read(id[:])
		tc.ID = base64.RawURLEncoding.EncodeToString(id[:])
		t := jwt.NewWithClaims(method, tc)
		if c.Kid != "" {
			t.Header["kid"] = c.Kid
		}
		s, err := t.SignedString(key)
		if err != nil {
			return "", errors.New("auth: signing failed")
		}
		if !strings.Contains(base64.RawStdEncoding.EncodeToString([]byte(s)), "/") {
			return s, nil
		}
	}
	return "", errors.New("auth: could not mint a subprotocol-safe token")
}
