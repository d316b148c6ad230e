// Package auth verifies Fabric's JWTs, extracts them from requests, decides
// which topics a connection may join or publish to, and mints development
// tokens (fabric token).
//
// # What Verify checks
//
// A token is refused before any parsing when it is empty (missing_token),
// longer than Config.MaxTokenSize (8 KiB by default), or not exactly three
// non-empty base64url segments (so a 64 KiB token or 100,000 dots cost one
// scan and no allocation; CVE-2025-30204 class). Then, following RFC 8725:
//
//   - Algorithms come from an allow-list built from the configured keys
//     (jwt.WithValidMethods): HS256 only when Config.Secret is set (at least
//     32 bytes), RS256/ES256/EdDSA only when public keys or a JWKS are set.
//     "none", HS384, PS256, ES384 and the rest are never accepted, and the
//     HS256 key is only ever the Secret, never a public key's PEM bytes, so
//     HS/RS key confusion is impossible. Each public key verifies exactly one
//     algorithm: RSA ≥ 2048 bits → RS256, EC P-256 → ES256, Ed25519 → EdDSA.
//   - exp is required; exp, nbf and iat are checked with Config.Leeway
//     (default 30 s) against Config.Now. iss and aud are required to match
//     when Config.Issuer / Config.Audience are set. Base64 is decoded
//     strictly. A "crit" header is refused; "jku", "x5u" and "jwk" headers
//     are ignored (keys come only from the configuration).
//   - kid, when present, must be 1–128 printable ASCII bytes without '/',
//     '\', quotes or ".." (rejected before any lookup). A token with a kid is
//     verified against the JWKS when Config.JWKSURL is set; a token without
//     one is verified against the PEM keys of its algorithm (with a JWKS and
//     no PEM keys, a kid is required). A JWK's own "alg" must equal the
//     token's alg; JWKs of type "oct", with "use" other than "sig", or with
//     an unsupported curve are ignored.
//   - The claims "channels" and "publish" must be arrays of valid patterns,
//     and "sub", "typ" and "channel" strings; otherwise the token is invalid.
//
// Failures are *Error values whose Reason is the wire reason:
// "missing_token", "invalid_token", "token_expired" (exp past the leeway) or
// "token_not_valid_yet" (nbf or iat beyond the leeway). A token that is both
// expired and has a wrong issuer/audience/missing claim is "invalid_token",
// so clients are only told to refresh when refreshing can help.
//
// # Tokens never reach logs
//
// No error from this package contains the token or any part of it: details
// are fixed strings, and errors from the JWT library (which may quote the
// input) are mapped, never wrapped. Callers must likewise log Reason(err)
// or err, never the token, and must redact the "token" query parameter.
//
// # JWKS rotation
//
// Each JWK is parsed and validated by github.com/MicahParks/jwkset, and a
// token's kid is resolved by github.com/MicahParks/keyfunc/v3 over a jwkset
// memory store; a JWK without "alg" is stored with the one algorithm of its
// type so keyfunc's alg check always applies. When to fetch is decided here
// (keyfunc's HTTP refresh would fetch in New, inside a caller's deadline and
// from a goroutine that outlives the Verifier). The key set is fetched lazily
// on the first lookup, and again:
//   - in the background when it is older than Config.JWKSRefresh (default
//     5 min); the cached key answers meanwhile, so a key removed from the set
//     stops verifying once that refresh has landed;
//   - when a token names an unknown kid, but at most one fetch of any cause
//     per Config.RefreshRateLimit (default 1 min). Concurrent lookups share
//     the in-flight fetch, so a burst of random kids costs at most one fetch
//     per window, and a newly published kid is accepted after at most one
//     such refresh.
//
// A Verify waits for a fetch no longer than its context and
// Config.LookupTimeout (default 2 s); the fetch itself runs on its own
// goroutine bounded by the HTTP client timeout (10 s default), so a slow
// JWKS server never holds up a handshake past its deadline. A failed fetch
// keeps the previous keys. Publish a new key before signing with it and
// keep the old one until its last token expires. Refresh forces a fetch
// (startup warm-up, readiness).
//
// # Authorization
//
// A Pattern has ':'-separated segments: "*" matches one segment, a final
// ">" one or more, "{sub}" is replaced by the subject as one literal segment
// (a subject containing ':' or a control byte makes the template grant
// nothing; '*' and '>' in a subject stay literal). Claims carry the token's
// grants, already bound to its subject; Grants carry namespace rules from
// configuration. The gateway combines them into one Authorizer
// (session.Policy):
//
//	claims, err := v.Verify(ctx, tok)
//	if err != nil { /* 401, {"reason": auth.Reason(err)} */ }
//	policy := claims.Grants().Merge(nsGrants.For(claims.Subject))
//
// A token without a "typ" claim is a connection token; use Claims.IsType to
// keep join and publisher tokens from standing in for one another.
//
// New returns ErrNoKeys when no key source is configured: the caller then
// runs in anonymous mode (nil Policy, loopback only) or refuses to start.
//
// # Token extraction
//
// FromRequest looks at the phoenix.js authToken subprotocol
// ("base64url.bearer.phx.<b64>", standard or URL alphabet, padded or not),
// then the X-Phoenix-AuthToken header (LongPoll), then the "token" query
// parameter when allowed. Mint never issues a token whose standard base64 form
// contains '/', which would break the subprotocol header.
package auth
