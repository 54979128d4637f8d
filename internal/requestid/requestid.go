// Package requestid holds what the HTTP and gRPC servers share about request ids: which ids a
// caller may send, and how a fresh one is made.
package requestid

import (
	"crypto/rand"
	"encoding/hex"
)

// Valid accepts up to 128 visible ASCII characters, so that a caller cannot inject log lines or
// huge values.
func Valid(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// Random returns n random bytes in hex.
func Random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
