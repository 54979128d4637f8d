package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// JWK is one public key from a key set.
type JWK struct {
	KeyID     string
	Algorithm string // "" when the set does not restrict it
	Key       any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// JWKSet is a parsed JSON Web Key Set: the keys that can verify tokens, and the signature keys that
// were refused, each with the reason.
type JWKSet struct {
	Keys     []JWK
	Rejected []RejectedKey
}

// RejectedKey is a signature key of a set that cannot be used: an RSA key under 2048 bits, an EC
// point off its curve, bad encoding, an "alg" that does not fit the key. One bad key never makes
// the rest of the set unusable; it is reported instead.
type RejectedKey struct {
	Index int    // position in the "keys" array
	KeyID string // "kid", possibly empty
	Type  string // "kty"
	Err   error
}

// Error describes the key and why it was refused, never its material.
func (k RejectedKey) Error() string {
	return fmt.Sprintf("key %d (kid %q, kty %s): %v", k.Index, clip(k.KeyID), clip(k.Type), k.Err)
}

func (k RejectedKey) Unwrap() error { return k.Err }

// clip bounds a string taken from a document before it goes into a message or a log.
func clip(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// keyIndex holds the keys of a set by key id (keys without one under ""). It is a KeySet; the
// keys of AUTH_JWKS_FILE are one.
type keyIndex map[string][]jwk

type jwk struct {
	alg string // may be empty: any algorithm that fits the key
	key any
}

func indexKeys(keys []JWK) keyIndex {
	x := make(keyIndex, len(keys))
	for _, k := range keys {
		x[k.KeyID] = append(x[k.KeyID], jwk{alg: k.Algorithm, key: k.Key})
	}
	return x
}

// Key implements KeySet.
func (x keyIndex) Key(_ context.Context, kid, alg string) (any, error) {
	if k, ok := x.find(kid, alg); ok {
		return k, nil
	}
	return nil, ErrUnknownKey
}

// find returns the key with id kid that may verify alg; without a kid, the only key that may.
func (x keyIndex) find(kid, alg string) (any, bool) {
	if kid != "" {
		for _, k := range x[kid] {
			if k.fits(alg) {
				return k.key, true
			}
		}
		return nil, false
	}
	var found any
	for _, ks := range x {
		for _, k := range ks {
			if k.fits(alg) {
				if found != nil {
					return nil, false // ambiguous without a kid
				}
				found = k.key
			}
		}
	}
	return found, found != nil
}

func (k jwk) fits(alg string) bool { return (k.alg == "" || k.alg == alg) && fits(k.key, alg) }

// maxRSABits bounds the modulus of an accepted RSA key: verification cost grows with its square, and
// no issuer uses more.
const maxRSABits = 8192

// ParseJWKS reads a JSON Web Key Set (RFC 7517) and returns its public signature keys (RSA of
// 2048 to 8192 bits, EC on P-256/384/521, Ed25519). Keys marked for encryption ("use":"enc"),
// symmetric keys ("kty":"oct"), keys for other algorithms and keys of unknown types are ignored: a
// key set fetched over the network must never supply an HMAC secret. A signature key that cannot be
// used (too short, off its curve, badly encoded, an "alg" that does not fit it) is skipped and listed
// in Rejected. The error is for a document that is not a key set at all; it never quotes the
// document.
func ParseJWKS(data []byte) (JWKSet, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return JWKSet{}, fmt.Errorf("not a JWK set: %w", jsonError(err))
	}
	if set.Keys == nil {
		return JWKSet{}, errors.New(`not a JWK set: no "keys" member`)
	}
	var out JWKSet
	for i, raw := range set.Keys {
		var k struct {
			Kty, Kid, Alg, Use, Crv, N, E, X, Y string
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			out.Rejected = append(out.Rejected, RejectedKey{Index: i, Err: jsonError(err)})
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Alg != "" && (k.Alg == "none" || algKind(k.Alg) == kindNone || algKind(k.Alg) == kindHMAC) {
			continue
		}
		var key any
		var err error
		switch k.Kty {
		case "RSA":
			key, err = rsaKey(k.N, k.E)
		case "EC":
			key, err = ecKey(k.Crv, k.X, k.Y)
		case "OKP":
			if k.Crv != "Ed25519" {
				continue // X25519 and X448 are key agreement keys
			}
			var x []byte
			if x, err = b64(k.X); err == nil && len(x) != ed25519.PublicKeySize {
				err = errors.New("bad Ed25519 key length")
			}
			key = ed25519.PublicKey(x)
		default:
			continue
		}
		if err == nil && k.Alg != "" && !fits(key, k.Alg) {
			err = fmt.Errorf("alg %s does not fit the key", clip(k.Alg))
		}
		if err != nil {
			out.Rejected = append(out.Rejected, RejectedKey{Index: i, KeyID: k.Kid, Type: k.Kty, Err: err})
			continue
		}
		out.Keys = append(out.Keys, JWK{KeyID: k.Kid, Algorithm: k.Alg, Key: key})
	}
	return out, nil
}

// jsonError drops what encoding/json quotes from the input (a syntax error names the offending
// character), so that a message about a file never shows its content.
func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("JSON syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("JSON %s where %s was expected at byte %d", te.Value, te.Type, te.Offset)
	}
	return errors.New("not valid JSON")
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64(n)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("bad RSA modulus")
	}
	eb, err := b64(e)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("bad RSA exponent")
	}
	exp := 0
	for _, c := range eb {
		exp = exp<<8 | int(c)
	}
	if exp < 3 || exp%2 == 0 || exp > 1<<31-1 { // crypto/rsa refuses exponents above 2³¹-1 when verifying
		return nil, errors.New("bad RSA exponent")
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}
	if bits := k.N.BitLen(); bits < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits is too short (at least 2048)", bits)
	} else if bits > maxRSABits {
		return nil, fmt.Errorf("RSA key of %d bits is too long (at most %d)", bits, maxRSABits)
	}
	return k, nil
}

func ecKey(crv, x, y string) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %q", clip(crv))
	}
	xb, err1 := b64(x)
	yb, err2 := b64(y)
	size := (curve.Params().BitSize + 7) / 8
	if err1 != nil || err2 != nil || len(xb) != size || len(yb) != size {
		return nil, errors.New("bad EC coordinates")
	}
	// Build the uncompressed point and let crypto/ecdh-backed parsing check it is on the curve.
	point := append([]byte{4}, append(xb, yb...)...)
	k, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, errors.New("EC point is not on the curve")
	}
	return k, nil
}
