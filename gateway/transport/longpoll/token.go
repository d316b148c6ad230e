package longpoll

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
)

// tokenPrefix marks a Fabric LongPoll session token. The version digit lets a
// later format coexist with this one during a rolling deploy.
const tokenPrefix = "lp1."

// idBytes is the size of a session id: 128 random bits, never reused.
const idBytes = 16

// macBytes is how much of the HMAC-SHA256 a token carries (128 bits).
const macBytes = 16

var b64 = base64.RawURLEncoding

// newSessionID returns a fresh random session id (base64url, 22 characters).
func newSessionID() string {
	var b [idBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("longpoll: crypto/rand failed: " + err.Error())
	}
	return b64.EncodeToString(b[:])
}

// signToken returns "lp1.<id>.<mac>" where mac = HMAC-SHA256(secret, "lp1.<id>")
// truncated to macBytes, base64url without padding.
func signToken(secret []byte, id string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(tokenPrefix))
	m.Write([]byte(id))
	sum := m.Sum(nil)
	return tokenPrefix + id + "." + b64.EncodeToString(sum[:macBytes])
}

// looksLikeToken reports whether tok has the shape of one of our tokens,
// signed or not.
func looksLikeToken(tok string) bool { return strings.HasPrefix(tok, tokenPrefix) }

// verifyToken returns the session id of tok when tok is a token signed with
// secret, and ok=false for anything else (the user's own `token` param, a
// tampered token, one signed by another key).
func verifyToken(secret []byte, tok string) (id string, ok bool) {
	if !looksLikeToken(tok) || len(tok) > 128 {
		return "", false
	}
	rest := tok[len(tokenPrefix):]
	dot := strings.IndexByte(rest, '.')
	if dot < 0 {
		return "", false
	}
	id, macStr := rest[:dot], rest[dot+1:]
	raw, err := b64.DecodeString(id)
	if err != nil || len(raw) != idBytes {
		return "", false
	}
	got, err := b64.DecodeString(macStr)
	if err != nil || len(got) != macBytes {
		return "", false
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(tokenPrefix))
	m.Write([]byte(id))
	if !hmac.Equal(got, m.Sum(nil)[:macBytes]) {
		return "", false
	}
	return id, true
}

// lastToken finds the last `token` value in a raw query string. It tolerates
// empty components (`&&`, a trailing `&`) and components without `=`, and
// returns the component's index among the '&'-separated parts so that the
// caller can remove exactly that occurrence. found is false when the query
// has no token.
func lastToken(rawQuery string) (value string, index int, found bool) {
	i := 0
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part != "" {
			k, v, _ := strings.Cut(part, "=")
			if key, err := url.QueryUnescape(k); err == nil && key == "token" {
				if val, err := url.QueryUnescape(v); err == nil {
					value, index, found = val, i, true
				}
			}
		}
		i++
	}
	return value, index, found
}

// withoutComponent returns rawQuery minus its index-th '&'-separated part.
func withoutComponent(rawQuery string, index int) string {
	parts := strings.Split(rawQuery, "&")
	if index < 0 || index >= len(parts) {
		return rawQuery
	}
	parts = append(parts[:index], parts[index+1:]...)
	return strings.Join(parts, "&")
}
