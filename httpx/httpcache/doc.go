// Package httpcache is a client-side HTTP cache: an http.RoundTripper that keeps responses to GET
// requests in a bounded in-memory LRU and honours RFC 9111 — max-age, s-maxage, Expires, no-store,
// no-cache, private, Vary — and revalidates stale entries with If-None-Match / If-Modified-Since.
//
// Start with New:
//
//	client := &http.Client{Transport: httpcache.New(http.DefaultTransport)}
//
// By default it behaves as a shared cache (a service's client serves many end users): responses
// marked private, and responses to requests with Authorization that are not explicitly public, are
// not stored. WithPrivate(true) makes it a single user's cache.
package httpcache
