package guard

import (
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
)

// Option configures a Limiter or a Shedder. Options that do not concern the type they are passed
// to are ignored.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	now     func() time.Time
	clocked bool // now was replaced: use it instead of the cheaper monotonic time.Since
	obs.Sinks
	route    func(*http.Request) string
	problems func(w http.ResponseWriter, r *http.Request, status int, detail string)

	// Limiter.
	keys       []KeyFunc
	routeRates map[string]Rate
	maxKeys    int
	headers    bool

	// Shedder.
	priority        func(*http.Request) Priority
	routePriorities map[string]Priority
}

func newOptions(opts []Option) options {
	o := options{
		now:     time.Now,
		Sinks:   obs.Defaults(),
		route:   func(r *http.Request) string { return r.Pattern },
		maxKeys: DefaultMaxKeys,
		headers: true,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithClock replaces time.Now, for tests that control time without testing/synctest.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now, o.clocked = now, true
		}
	})
}

// monotonic returns a function giving nanoseconds since epoch. With the real clock it uses
// time.Since, which reads only the monotonic clock (one vDSO call instead of time.Now's two); with
// an injected clock it uses that clock.
func (o *options) monotonic(epoch time.Time) func() int64 {
	if !o.clocked {
		return func() int64 { return int64(time.Since(epoch)) }
	}
	now := o.now
	return func() int64 { return int64(now().Sub(epoch)) }
}

// WithMeterProvider sets where metrics go. The default is a no-op provider: nothing is recorded
// unless a provider is given (the guard never reads the OpenTelemetry globals).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithLogger sets the logger that receives one record, with its reason, for every refused request.
// The default discards them.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithRouteFunc sets how a request's route template is found, for per-route limits and priorities
// and for the http.route metric attribute. The default reads r.Pattern, which net/http sets only
// once the ServeMux has routed the request: a guard placed in front of the mux needs MuxRoute.
func WithRouteFunc(f func(*http.Request) string) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.route = f
		}
	})
}

// WithProblemWriter replaces the function that writes refusals (429, 503). The default writes
// application/problem+json with the problem package. Retry-After and the RateLimit headers are set
// before it is called.
func WithProblemWriter(f func(w http.ResponseWriter, r *http.Request, status int, detail string)) Option {
	return optionFunc(func(o *options) { o.problems = f })
}

// MuxRoute returns a route function that asks mux which pattern would serve a request, for guards
// placed in front of the mux (where r.Pattern is still empty). It costs one extra routing lookup.
func MuxRoute(mux *http.ServeMux) func(*http.Request) string {
	return func(r *http.Request) string {
		if r.Pattern != "" {
			return r.Pattern
		}
		_, pattern := mux.Handler(r)
		return pattern
	}
}
