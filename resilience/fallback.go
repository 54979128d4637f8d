package resilience

import "net/http"

// Fallback calls fn when the call through next failed: it returned an error, or a response with status
// 429, 500, 502, 503 or 504 (whose body is closed before fn is called). fn's result is the call's
// result; fn receives the original error (nil for a failed status) and the status (0 for an error), so
// it can serve a cached or default answer, or return a better error. Place it outermost.
func Fallback(fn func(req *http.Request, status int, err error) (*http.Response, error)) Middleware {
	return func(next http.RoundTripper) http.RoundTripper {
		return RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			if err == nil && !retryableStatus(resp.StatusCode) && resp.StatusCode != http.StatusInternalServerError {
				return resp, nil
			}
			status := 0
			if resp != nil {
				status = resp.StatusCode
				discard(resp)
			}
			return fn(req, status, err)
		})
	}
}
