// Package httpx holds request and response helpers for handlers: strict JSON decoding with
// validation that answers with RFC 9457 problem details, and conditional-request (ETag) and
// Cache-Control helpers. The client-side HTTP cache is in the subpackage httpcache.
//
// Start with Bind in a handler:
//
//	var in CreateOrder
//	if !httpx.Bind(w, r, &in) {
//		return // 400, 413, 415 or 422 already written as application/problem+json
//	}
//
// and WriteJSON with an ETag for responses that clients may cache.
package httpx
