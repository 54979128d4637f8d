package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	// ErrUnknownKey means no key matches the token's key id and algorithm.
	ErrUnknownKey = errors.New("auth: no key for this key id and algorithm")
	// ErrNoToken means the request carries no bearer token.
	ErrNoToken = errors.New("auth: no bearer token")
	// ErrInvalidToken wraps every reason a token was refused.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrInsufficientScope means the caller lacks a scope or claim the route requires.
	ErrInsufficientScope = errors.New("auth: insufficient scope")
)

// KeySet finds the verification key for a token. kid may be empty (no "kid" header).
type KeySet interface {
	Key(ctx context.Context, kid, alg string) (any, error)
}

// keyKind is the family of algorithm a key can verify.
type keyKind int

const (
	kindNone keyKind = iota
	kindRSA
	kindEC
	kindEd
	kindHMAC
)

func algKind(alg string) keyKind {
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		return kindRSA
	case strings.HasPrefix(alg, "ES"):
		return kindEC
	case alg == "EdDSA":
		return kindEd
	case strings.HasPrefix(alg, "HS"):
		return kindHMAC
	}
	return kindNone
}

// fits reports whether key may verify alg: the key's type must match the algorithm's family (so a
// public RSA key can never be used as an HMAC secret), and an EC key's curve must match the
// algorithm's.
func fits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return algKind(alg) == kindRSA && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	case []byte:
		return algKind(alg) == kindHMAC && len(k) >= 32
	}
	return false
}

// StaticKeys is a fixed KeySet, keyed by key id. Values are *rsa.PublicKey, *ecdsa.PublicKey,
// ed25519.PublicKey, or []byte HMAC secrets of at least 32 bytes. Mixing HMAC secrets with
// asymmetric keys is refused by NewVerifier.
type StaticKeys map[string]any

// Key returns the key with id kid, or the only key that fits alg when the token has no kid.
func (s StaticKeys) Key(_ context.Context, kid, alg string) (any, error) {
	if kid != "" {
		if k, ok := s[kid]; ok && fits(k, alg) {
			return k, nil
		}
		return nil, ErrUnknownKey
	}
	var found any
	for _, k := range s {
		if fits(k, alg) {
			if found != nil {
				return nil, fmt.Errorf("%w: token has no kid and several keys fit %s", ErrUnknownKey, alg)
			}
			found = k
		}
	}
	if found == nil {
		return nil, ErrUnknownKey
	}
	return found, nil
}

func (s StaticKeys) hasHMAC() (hmac, asym bool) {
	for _, k := range s {
		if _, ok := k.([]byte); ok {
			hmac = true
		} else {
			asym = true
		}
	}
	return hmac, asym
}
