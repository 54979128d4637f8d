package resilience

import "net/http"

// Middleware decorates a RoundTripper, as Fallback does.
type Middleware func(http.RoundTripper) http.RoundTripper

// roundTripperFunc adapts a function to http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Chain wraps base in mws so that mws[0] is the outermost layer: Chain(t, a, b) is a(b(t)).
func Chain(base http.RoundTripper, mws ...Middleware) http.RoundTripper {
	for i := len(mws) - 1; i >= 0; i-- {
		base = mws[i](base)
	}
	return base
}
