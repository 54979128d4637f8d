package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Secret is a string that never prints: fmt, JSON and text encodings show "[REDACTED]". Use it for
// passwords and tokens so that a stray log line or a config dump cannot leak them; Reveal returns the
// value. A field of type Secret is treated as tagged secret:"true".
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String returns "[REDACTED]", or "" when the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText keeps encoders from printing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ByteSize is a size in bytes that decodes from "512", "64KiB", "10MB", "1.5GiB". Units follow
// Kubernetes: K, M, G, T (and KB, MB, ...) are powers of 1000; Ki, Mi, Gi, Ti (and KiB, ...) powers
// of 1024. A bare number is bytes.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"ti", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// ParseByteSize parses a size such as "10MiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	const errSize = decodeError("not a byte size (use a decimal number with an optional unit: 512, 64KiB, 10MB)")
	if t == "" || strings.Trim(t, "0123456789+-.e") != "" {
		return 0, errSize
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 {
			return 0, decodeError("negative byte size")
		}
		f := float64(n) * mult
		if f > math.MaxInt64 {
			return 0, decodeError("byte size out of range")
		}
		return ByteSize(n * int64(mult)), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errSize
	}
	if f < 0 {
		return 0, decodeError("negative byte size")
	}
	f *= mult
	if f >= math.MaxInt64 {
		return 0, decodeError("byte size out of range")
	}
	return ByteSize(f), nil
}

// String renders the size with the largest binary unit that divides it exactly.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.m == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.m, u.s)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
