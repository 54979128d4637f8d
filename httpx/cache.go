package httpx

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ETag returns a strong entity tag for body: a quoted, URL-safe base64 of the first 16 bytes of
// its SHA-256. It depends only on the bytes, so every instance of a service gives the same tag.
func ETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// NotModified sets the ETag header to etag and, when r is a GET or HEAD whose If-None-Match
// matches it (weak comparison, as RFC 9110 §13.1.2 requires, and "*"), writes 304 Not Modified and
// returns true: the handler then writes nothing more.
func NotModified(w http.ResponseWriter, r *http.Request, etag string) bool {
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	inm := r.Header.Values("If-None-Match")
	if len(inm) == 0 || etag == "" || !matchAny(inm, etag) {
		return false
	}
	h := w.Header()
	h.Del("Content-Type")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusNotModified)
	return true
}

func matchAny(values []string, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
				return true
			}
		}
	}
	return false
}

// CacheControl builds a Cache-Control response header (RFC 9111 §5.2.2). The zero value sends
// nothing; use NoStore for responses that must never be kept.
type CacheControl struct {
	MaxAge               time.Duration // max-age, whole seconds
	SharedMaxAge         time.Duration // s-maxage, for shared caches
	StaleWhileRevalidate time.Duration // RFC 5861
	Public               bool
	Private              bool // only the end user's own cache may keep it
	NoCache              bool // may be kept, but revalidated before every use
	NoStore              bool // must not be kept at all
	MustRevalidate       bool
	Immutable            bool
}

// String returns the header value.
func (c CacheControl) String() string {
	var parts []string
	add := func(on bool, s string) {
		if on {
			parts = append(parts, s)
		}
	}
	secs := func(name string, d time.Duration) {
		if d > 0 {
			parts = append(parts, name+"="+strconv.FormatInt(int64(d/time.Second), 10))
		}
	}
	add(c.NoStore, "no-store")
	add(c.NoCache, "no-cache")
	add(c.Public, "public")
	add(c.Private, "private")
	secs("max-age", c.MaxAge)
	secs("s-maxage", c.SharedMaxAge)
	secs("stale-while-revalidate", c.StaleWhileRevalidate)
	add(c.MustRevalidate, "must-revalidate")
	add(c.Immutable, "immutable")
	return strings.Join(parts, ", ")
}

// Set sets the Cache-Control header of w (nothing when c is the zero value).
func (c CacheControl) Set(w http.ResponseWriter) {
	if s := c.String(); s != "" {
		w.Header().Set("Cache-Control", s)
	}
}

// WriteJSON writes v as JSON with status. For a 200 answer to GET or HEAD it adds a strong ETag and
// answers 304 when the client's copy is current; cc, when not nil, sets Cache-Control (also on 304,
// as RFC 9110 §15.4.5 asks). A value that cannot be encoded gives a 500 problem response.
func WriteJSON(w http.ResponseWriter, r *http.Request, status int, v any, cc *CacheControl) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	body = append(body, '\n')
	if cc != nil {
		cc.Set(w)
	}
	if status == http.StatusOK && NotModified(w, r, ETag(body)) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
