package auth

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
)

// SubprotocolPrefix starts the phoenix.js authToken subprotocol entry:
// "base64url.bearer.phx.<B64>" where B64 is, despite the name, STANDARD
// base64 without padding (btoa); the URL alphabet is accepted too.
const SubprotocolPrefix = "base64url.bearer.phx."

// HeaderAuthToken is the header phoenix.js LongPoll sends the raw authToken in.
const HeaderAuthToken = "X-Phoenix-AuthToken"

// MaxExtractSize bounds any token (or its encoding) this package will copy
// out of a request; Verify applies the tighter Config.MaxTokenSize.
const MaxExtractSize = 64 << 10

// FromRequest finds the connection token, in this order: the authToken
// subprotocol entry of Sec-WebSocket-Protocol, then the X-Phoenix-AuthToken
// header, then the "token" query parameter (first non-empty value) unless
// allowQuery is false. It returns "", ErrMissingToken when there is none,
// and ErrInvalidToken when the first source present is unusable (a bad
// subprotocol encoding, an over-long value): a broken credential never falls
// through to a weaker source. It never modifies r.
//
// For LongPoll, where the last "token" query value may be the session token
// (phoenix.js 1.8 sends authToken as a Sec-WebSocket-Protocol entry and, on LongPoll, the X-Phoenix-AuthToken header), call with allowQuery false and use
// FromQueryValues on the values the gateway left for the user.
func FromRequest(r *http.Request, allowQuery bool) (string, error) {
	if r == nil {
		return "", missing("no request")
	}
	if vals := r.Header.Values("Sec-WebSocket-Protocol"); len(vals) > 0 {
		tok, err := FromSubprotocol(vals...)
		if err == nil || Reason(err) != ErrMissingToken.reason {
			return tok, err
		}
	}
	if h := strings.TrimSpace(r.Header.Get(HeaderAuthToken)); h != "" {
		if len(h) > MaxExtractSize {
			return "", invalid("token too large")
		}
		return h, nil
	}
	if allowQuery && r.URL != nil && strings.Contains(r.URL.RawQuery, "token") {
		q, _ := url.ParseQuery(r.URL.RawQuery) // a malformed pair is skipped, the rest kept
		return FromQueryValues(q["token"])
	}
	return "", missing("no token in request")
}

// FromQueryValues returns the first non-empty value, or ErrMissingToken.
func FromQueryValues(vals []string) (string, error) {
	for _, v := range vals {
		if v == "" {
			continue
		}
		if len(v) > MaxExtractSize {
			return "", invalid("token too large")
		}
		return v, nil
	}
	return "", missing("no token value")
}

// FromSubprotocol finds the authToken entry among Sec-WebSocket-Protocol
// header values (each a comma-separated list; entries are trimmed) and
// decodes it. Suitable for a gobwas/ws OnHeader callback. Returns
// ErrMissingToken when no entry has the prefix.
func FromSubprotocol(headerValues ...string) (string, error) {
	for _, hv := range headerValues {
		for hv != "" {
			var entry string
			entry, hv, _ = strings.Cut(hv, ",")
			entry = strings.TrimSpace(entry)
			if !strings.HasPrefix(entry, SubprotocolPrefix) {
				continue
			}
			return decodeSubprotocol(entry[len(SubprotocolPrefix):])
		}
	}
	return "", missing("no authToken subprotocol")
}

func decodeSubprotocol(enc string) (string, error) {
	if len(enc) > MaxExtractSize*4/3+4 {
		return "", invalid("token too large")
	}
	enc = strings.TrimRight(enc, "=")
	if enc == "" {
		return "", invalid("empty authToken subprotocol")
	}
	if strings.ContainsAny(enc, "-_") {
		if strings.ContainsAny(enc, "+/") {
			return "", invalid("mixed base64 alphabets")
		}
		enc = strings.NewReplacer("-", "+", "_", "/").Replace(enc)
	}
	b, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil || len(b) == 0 {
		return "", invalid("bad authToken subprotocol encoding")
	}
	return string(b), nil
}

// EncodeSubprotocol returns the Sec-WebSocket-Protocol entry phoenix.js
// builds for token (standard base64, no padding), for tests and Go clients.
func EncodeSubprotocol(token string) string {
	return SubprotocolPrefix + base64.RawStdEncoding.EncodeToString([]byte(token))
}
