package lb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/cloudchassis/kit/discovery"
)

// Defaults of the options below.
const (
	defaultPolicy = P2C
	// defaultDecay is the time constant of the peak-EWMA latency estimate (Finagle's and Linkerd's
	// default): a sample's weight falls to 1/e after this long.
	defaultDecay = 10 * time.Second
	// defaultVirtualNodes is how many points each instance of weight 1 gets on the hash ring.
	defaultVirtualNodes = 160
)

// Option configures a Balancer.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	policy       string
	builder      Builder
	decay        time.Duration
	vnodes       int
	outlier      Outlier
	classifier   discovery.Classifier
	wrap         func(discovery.Instance, http.RoundTripper) http.RoundTripper
	base         http.RoundTripper
	availability func(id string) bool
	meter        metric.MeterProvider
	perInstance  bool
	clock        func() time.Time
	ownClock     bool // set by WithClock; false means clock is time.Now
	src          rand.Source
}

func defaultOptions() options {
	return options{
		policy:     defaultPolicy,
		decay:      defaultDecay,
		vnodes:     defaultVirtualNodes,
		outlier:    DefaultOutlier(),
		classifier: discovery.Classify,
		clock:      time.Now,
	}
}

func (o *options) validate() error {
	var errs []error
	if b, err := lookup(o.policy); err != nil {
		errs = append(errs, err)
	} else {
		o.builder = b
	}
	if o.decay <= 0 {
		errs = append(errs, fmt.Errorf("lb: decay %v: must be positive", o.decay))
	}
	if o.vnodes < 1 {
		errs = append(errs, fmt.Errorf("lb: virtual nodes %d: must be at least 1", o.vnodes))
	}
	if err := o.outlier.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WithPolicy selects the balancing policy by its registered name (see Register and Policies); New
// fails for a name that is not registered. Default: P2C.
func WithPolicy(name string) Option { return optionFunc(func(o *options) { o.policy = name }) }

// WithDecay sets the time constant of P2C's peak-EWMA latency estimate. Shorter reacts faster to
// recovery, longer remembers a slow instance longer. Default: 10s (Finagle's and Linkerd's).
func WithDecay(d time.Duration) Option { return optionFunc(func(o *options) { o.decay = d }) }

// WithVirtualNodes sets the number of ring points per unit of instance weight for RingHash. More
// points spread keys more evenly at the cost of memory (16 bytes a point). Default: 160.
func WithVirtualNodes(n int) Option { return optionFunc(func(o *options) { o.vnodes = n }) }

// WithOutlier sets outlier ejection and panic mode exactly as given: a zero field disables that
// criterion, so start from DefaultOutlier() to change one knob. WithOutlier(Outlier{}) turns
// ejection off. Default: DefaultOutlier().
func WithOutlier(c Outlier) Option { return optionFunc(func(o *options) { o.outlier = c }) }

// WithClassifier sets how call outcomes are read (the classifier shared with resilience, e.g. a
// resilience.Dependency's Classify): a Failure counts towards outlier ejection and doubles the
// latency estimate; a Local result, or an error that is not a Failure, records nothing; a response
// that is Retryable but not a Failure (429) counts as slow, not towards ejection. It is called by
// Transport with each attempt's result and by Endpoint.Done with a nil response. Default:
// discovery.Classify.
func WithClassifier(f discovery.Classifier) Option {
	return optionFunc(func(o *options) { o.classifier = f })
}

// WithInstanceTransport wraps the transport of each instance: this is where a per-instance circuit
// breaker, per-attempt timeout or bulkhead belongs. wrap is called once when an instance appears, with
// the base transport as next, and the result is kept while the instance stays at the same address.
//
// If the returned RoundTripper is a discovery.InstanceTransport (resilience.Dependency.Instance
// returns one), picks skip the instance while Available returns false (its breaker is open) exactly
// like an ejected one.
func WithInstanceTransport(wrap func(inst discovery.Instance, next http.RoundTripper) http.RoundTripper) Option {
	return optionFunc(func(o *options) { o.wrap = wrap })
}

// WithInstancePolicy installs the per-instance half of a client's policies (a
// resilience.Dependency): WithInstanceTransport with p.Instance and WithClassifier with p.Classify.
func WithInstancePolicy(p discovery.InstancePolicy) Option {
	return optionFunc(func(o *options) {
		o.wrap = func(inst discovery.Instance, next http.RoundTripper) http.RoundTripper {
			return p.Instance(inst.ID, next)
		}
		o.classifier = p.Classify
	})
}

// WithBaseTransport sets the transport that carries requests to instances (before
// WithInstanceTransport wraps it). Default: http.DefaultTransport.
func WithBaseTransport(rt http.RoundTripper) Option {
	return optionFunc(func(o *options) { o.base = rt })
}

// WithAvailability adds a test that picks apply to every candidate instance: false skips it, like
// an ejected instance. It is the alternative to a discovery.InstanceTransport (see
// WithInstanceTransport) and must be safe for concurrent use and cheap. Unavailable instances
// are skipped even in panic mode (calling them would be refused anyway); when none is available Pick
// returns ErrNoInstances. Default: every instance is available.
func WithAvailability(f func(id string) bool) Option {
	return optionFunc(func(o *options) { o.availability = f })
}

// WithMeterProvider sets where the balancer's metrics go. Default: none (a no-op provider; the
// OpenTelemetry global is never read).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.meter = mp })
}

// WithPerInstanceMetrics adds chassis.lb.picks, a counter of picks per instance labelled with the
// instance id. Its cardinality is the number of instances in the snapshot; series of instances that
// leave stop being reported. Default: off.
func WithPerInstanceMetrics() Option { return optionFunc(func(o *options) { o.perInstance = true }) }

// WithClock sets the time source of ejection timing, the latency decay and Transport's latency
// measurement. Default: time.Now. Tests may instead run in a testing/synctest bubble.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.clock, o.ownClock = now, true })
}

// WithRandSource makes picks draw from src instead of the runtime's per-thread generator, for
// reproducible tests and simulations (for example rand.NewPCG(1, 2)). The source is guarded by a
// mutex, which serializes concurrent picks: keep the default in production.
func WithRandSource(src rand.Source) Option { return optionFunc(func(o *options) { o.src = src }) }

func (o *options) meterProvider() metric.MeterProvider {
	if o.meter != nil {
		return o.meter
	}
	return noop.NewMeterProvider()
}
