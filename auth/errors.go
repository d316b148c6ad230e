package auth

import "errors"

// Error is an authentication failure. Its Reason is the short, stable string
// the gateway puts on the wire ({"reason": ...} in a join reply, the body of a
// 401). Its message never contains the token or any part of it: details are
// fixed strings chosen by this package, never text copied from the token or
// from a parser error that could quote it.
type Error struct {
	reason string
	detail string
}

// Error implements error.
func (e *Error) Error() string {
	if e.detail == "" {
		return "auth: " + e.reason
	}
	return "auth: " + e.reason + ": " + e.detail
}

// Reason returns the wire reason, e.g. "invalid_token".
func (e *Error) Reason() string { return e.reason }

// Is makes errors.Is(err, ErrInvalidToken) true for every invalid-token error,
// whatever its detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.detail == "" && t.reason == e.reason
}

// Sentinel errors. Compare with errors.Is; the errors returned by Verify and
// FromRequest carry a detail but match these.
var (
	// ErrMissingToken: no token was presented. Reason "missing_token".
	ErrMissingToken = &Error{reason: "missing_token"}
	// ErrInvalidToken: the token is malformed, badly signed, signed with an
	// algorithm or key that is not allowed, has the wrong issuer or audience,
	// or lacks a required claim. Reason "invalid_token".
	ErrInvalidToken = &Error{reason: "invalid_token"}
	// ErrTokenExpired: exp is more than the leeway in the past. Reason
	// "token_expired"; the client may fetch a fresh token and retry.
	ErrTokenExpired = &Error{reason: "token_expired"}
	// ErrNotValidYet: nbf or iat is more than the leeway in the future.
	// Reason "token_not_valid_yet".
	ErrNotValidYet = &Error{reason: "token_not_valid_yet"}
)

// ErrNoKeys is returned by New when the Config names no key source at all
// (no Secret, no PublicKeyPEMs, no JWKSURL). It is not an authentication
// failure: it tells the caller to run in anonymous mode (docs/configuration.md) or
// to refuse to start.
var ErrNoKeys = errors.New("auth: no verification key configured (anonymous mode)")

func invalid(detail string) error { return &Error{reason: ErrInvalidToken.reason, detail: detail} }
func expired(detail string) error { return &Error{reason: ErrTokenExpired.reason, detail: detail} }
func notValidYet(d string) error  { return &Error{reason: ErrNotValidYet.reason, detail: d} }
func missing(detail string) error { return &Error{reason: ErrMissingToken.reason, detail: detail} }

// Reason maps an error returned by this package to its wire reason:
// "missing_token", "invalid_token", "token_expired" or "token_not_valid_yet".
// A nil error gives ""; any other error gives "invalid_token".
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.reason
	}
	return ErrInvalidToken.reason
}
