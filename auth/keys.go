package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Algorithms this package can verify. HS256 is allowed only with a Secret;
// the three asymmetric ones only with public keys (PEM or JWKS).
const (
	AlgHS256 = "HS256"
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
)

const (
	minSecretLen = 32   // RFC 8725 §3.5: no short human passwords as HMAC keys
	minRSABits   = 2048 // weaker RSA keys are refused
	maxRSABits   = 8192 // bigger ones make every verification a DoS lever
)

// algFor returns the one algorithm a public key may verify (RFC 8725 §3.1:
// each key is used with exactly one algorithm).
func algFor(k crypto.PublicKey) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return "", fmt.Errorf("auth: RSA key of %d bits (want %d..%d)", n, minRSABits, maxRSABits)
		}
		return AlgRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("auth: EC key is not on P-256 (only ES256 is supported)")
		}
		return AlgES256, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("auth: bad Ed25519 key size")
		}
		return AlgEdDSA, nil
	default:
		return "", fmt.Errorf("auth: unsupported public key type %T", k)
	}
}

// parsePublicPEMs reads every PEM block of every input: "PUBLIC KEY"
// (PKIX), "RSA PUBLIC KEY" (PKCS#1) or "CERTIFICATE". A private key given
// where a public key is expected is an error, not silently accepted.
func parsePublicPEMs(pems [][]byte) (map[string][]crypto.PublicKey, error) {
	out := map[string][]crypto.PublicKey{}
	for i, data := range pems {
		found := 0
		rest := data
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			var k any
			var err error
			switch b.Type {
			case "PUBLIC KEY":
				k, err = x509.ParsePKIXPublicKey(b.Bytes)
			case "RSA PUBLIC KEY":
				k, err = x509.ParsePKCS1PublicKey(b.Bytes)
			case "CERTIFICATE":
				var c *x509.Certificate
				if c, err = x509.ParseCertificate(b.Bytes); err == nil {
					k = c.PublicKey
				}
			default:
				return nil, fmt.Errorf("auth: PublicKeyPEMs[%d]: PEM block %q is not a public key", i, b.Type)
			}
			if err != nil {
				return nil, fmt.Errorf("auth: PublicKeyPEMs[%d]: %w", i, err)
			}
			alg, err := algFor(k)
			if err != nil {
				return nil, fmt.Errorf("PublicKeyPEMs[%d]: %w", i, err)
			}
			out[alg] = append(out[alg], k)
			found++
		}
		if found == 0 {
			return nil, fmt.Errorf("auth: PublicKeyPEMs[%d]: no PEM block found", i)
		}
	}
	return out, nil
}

// parsePrivatePEM reads one private key (PKCS#8, PKCS#1 or SEC 1) and returns
// it with the algorithm it signs with.
func parsePrivatePEM(data []byte) (crypto.Signer, string, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, "", errors.New("auth: no PEM block in private key")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, "", fmt.Errorf("auth: PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("auth: private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, "", fmt.Errorf("auth: unsupported private key type %T", k)
	}
	var alg string
	if alg, err = algFor(s.Public()); err != nil {
		return nil, "", err
	}
	if ek, ok := s.(ed25519.PrivateKey); ok {
		return ek, alg, nil
	}
	return s, alg, nil
}
