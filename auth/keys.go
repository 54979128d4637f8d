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
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"
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

// JWKS is a KeySet fetched from a JSON Web Key Set URL and cached.
//
// A token whose key id is not in the cache makes the set be fetched again, at most once per
// WithMinRefresh interval however many such tokens arrive (so a flood of forged key ids costs one
// fetch per interval). When a fetch fails the keys already known keep being served. Run refreshes
// the set in the background until its context ends. A JWKS is safe for concurrent use.
type JWKS struct {
	url        string
	client     *http.Client
	now        func() time.Time
	minRefresh time.Duration
	interval   time.Duration
	maxBytes   int64

	mu          sync.RWMutex
	keys        map[string]jwk
	lastAttempt time.Time
	lastErr     error

	fetchMu sync.Mutex // one fetch at a time
}

type jwk struct {
	alg string // may be empty: any algorithm that fits the key
	key any
}

// NewJWKS returns a JWKS for url. Nothing is fetched until the first token arrives or Refresh or
// Run is called.
func NewJWKS(url string, opts ...Option) *JWKS {
	o := newOptions(opts)
	return &JWKS{
		url:        url,
		client:     o.client,
		now:        o.now,
		minRefresh: o.minRefresh,
		interval:   o.refreshInterval,
		maxBytes:   o.maxBytes,
	}
}

// Key implements KeySet.
func (j *JWKS) Key(ctx context.Context, kid, alg string) (any, error) {
	if k, ok := j.lookup(kid, alg); ok {
		return k, nil
	}
	if j.fetchedRecently() {
		// The common case of a flood of forged key ids: answer without queueing on fetchMu.
		return nil, ErrUnknownKey
	}
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	// Another request may have fetched while we waited.
	if k, ok := j.lookup(kid, alg); ok {
		return k, nil
	}
	if j.fetchedRecently() {
		return nil, ErrUnknownKey
	}
	// The fetch serves every request waiting for keys, so one impatient client must not cancel it
	// (and a canceled fetch would block refetching for a whole interval).
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	if err := j.fetch(fctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownKey, err)
	}
	if k, ok := j.lookup(kid, alg); ok {
		return k, nil
	}
	return nil, ErrUnknownKey
}

// fetchTimeout bounds a fetch made on behalf of a request.
const fetchTimeout = 10 * time.Second

func (j *JWKS) fetchedRecently() bool {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return !j.lastAttempt.IsZero() && j.now().Sub(j.lastAttempt) < j.minRefresh
}

func (j *JWKS) lookup(kid, alg string) (any, bool) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if kid != "" {
		k, ok := j.keys[kid]
		if ok && (k.alg == "" || k.alg == alg) && fits(k.key, alg) {
			return k.key, true
		}
		return nil, false
	}
	var found any
	for _, k := range j.keys {
		if (k.alg == "" || k.alg == alg) && fits(k.key, alg) {
			if found != nil {
				return nil, false // ambiguous without a kid
			}
			found = k.key
		}
	}
	return found, found != nil
}

// Refresh fetches the key set now. On failure the keys already known are kept.
func (j *JWKS) Refresh(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	return j.fetch(ctx)
}

// Err returns the error of the last fetch, nil if it succeeded.
func (j *JWKS) Err() error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.lastErr
}

// Run refreshes the key set every WithRefreshInterval (and after a failure, every WithMinRefresh)
// until ctx ends, then returns nil. The caller owns the goroutine that runs it.
func (j *JWKS) Run(ctx context.Context) error {
	for {
		wait := j.interval
		if err := j.Refresh(ctx); err != nil && ctx.Err() == nil {
			wait = max(j.minRefresh, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// fetch is called with fetchMu held.
func (j *JWKS) fetch(ctx context.Context) error {
	keys, err := j.get(ctx)
	if err != nil && ctx.Err() != nil {
		return err // our caller gave up; that says nothing about the endpoint
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lastAttempt = j.now()
	j.lastErr = err
	if err != nil {
		return err
	}
	j.keys = keys
	return nil
}

func (j *JWKS) get(ctx context.Context) (map[string]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", j.url, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("jwks %s: status %s", j.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, j.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", j.url, err)
	}
	if int64(len(body)) > j.maxBytes {
		return nil, fmt.Errorf("jwks %s: document larger than %d bytes", j.url, j.maxBytes)
	}
	keys, err := ParseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", j.url, err)
	}
	out := make(map[string]jwk, len(keys))
	for _, k := range keys {
		out[k.KeyID] = jwk{alg: k.Algorithm, key: k.Key}
	}
	return out, nil
}

// JWK is one public key from a key set.
type JWK struct {
	KeyID     string
	Algorithm string // "" when the set does not restrict it
	Key       any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// ParseJWKS reads a JSON Web Key Set (RFC 7517) and returns its public signature keys (RSA, EC on
// P-256/384/521, Ed25519). Keys marked for encryption ("use":"enc"), symmetric keys ("kty":"oct")
// and keys of unknown types are skipped: a key set fetched over the network must never supply an
// HMAC secret. A malformed key of a known type is an error.
func ParseJWKS(data []byte) ([]JWK, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`not a JWK set: no "keys" member`)
	}
	out := make([]JWK, 0, len(set.Keys))
	for i, raw := range set.Keys {
		var k struct {
			Kty, Kid, Alg, Use, Crv, N, E, X, Y string
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
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
				continue
			}
			var x []byte
			if x, err = b64(k.X); err == nil && len(x) != ed25519.PublicKeySize {
				err = errors.New("bad Ed25519 key length")
			}
			key = ed25519.PublicKey(x)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		out = append(out, JWK{KeyID: k.Kid, Algorithm: k.Alg, Key: key})
	}
	return out, nil
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
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("bad RSA exponent")
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}
	if k.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits is too short (at least 2048)", k.N.BitLen())
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
		return nil, fmt.Errorf("unsupported curve %q", crv)
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
		return nil, fmt.Errorf("bad EC point: %w", err)
	}
	return k, nil
}
