package auth

// JTIKey is a token id (the jti claim) as a 64-bit key: 0 for none. A
// connection keeps its token's key instead of the jti string (eight bytes
// instead of a string header and its bytes, for every connection), and
// revocation lists are kept by key. Two different jtis share a key with
// probability 2^-64: a revocation could then also refuse an unrelated
// token, never let a revoked one through. FNV-1a, so every process
// computes the same key.
func JTIKey(jti string) uint64 {
	if jti == "" {
		return 0
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(jti); i++ {
		h ^= uint64(jti[i])
		h *= 1099511628211
	}
	if h == 0 {
		h = 1 // 0 means "no jti"
	}
	return h
}
