package lb

import (
	"errors"
	"fmt"
	"time"
)

// Outlier configures outlier ejection and panic mode, with Envoy's semantics.
//
// An instance is ejected (taken out of the pick set) after ConsecutiveFailures failures in a row, or
// when at least FailurePercent of its calls failed in the current Interval and it had at least
// MinRequests calls in it. It stays out for BaseEjectionTime times the number of times it has been
// ejected, at most MaxEjectionTime, then comes back on its own; each Interval it then stays healthy
// forgives one past ejection. Never more than MaxEjectionPercent of the instances are ejected at
// once, but at least one may be, as in Envoy.
//
// Latency ejection (off by default): an instance is ejected after ConsecutiveSlow calls in a row
// that each took longer than LatencyFactor times the median latency estimate of the healthy
// instances, and longer than LatencyMin. The median is taken over the peak-EWMA estimates P2C keeps,
// refreshed at most every latencyRefresh as calls complete, and only when at least
// latencyMinInstances instances have one: with fewer, "slower than the others" means nothing. A call
// cut short (a hedge won, the caller gave up) after longer than the threshold counts as slow too,
// since the instance took at least that long; a failed call neither counts nor breaks the run.
// P2C alone already steers most calls away from a slow instance, but keeps probing it, and every
// probe of an instance that hangs costs a caller its whole deadline: ejection stops the probes for
// BaseEjectionTime. It is relative on purpose: when every instance is slow (an overloaded
// dependency, a slow database behind all of them), none is ejected.
//
// Panic mode: when fewer than PanicPercent of the instances are healthy (not ejected), the balancer
// ignores ejection and spreads calls over all instances, because overloading the few left would be
// worse than sending some calls to bad ones. PanicPercent 0 disables panic mode: with every instance
// ejected, Pick then fails with ErrNoInstances.
type Outlier struct {
	// ConsecutiveFailures ejects after this many failures in a row; 0 disables. Default 5.
	ConsecutiveFailures int
	// FailurePercent ejects when this share of calls in the current Interval failed; 0 disables.
	// Default 50.
	FailurePercent int
	// MinRequests is the volume in the current Interval below which FailurePercent is not applied.
	// Default 20.
	MinRequests int
	// Interval is the window of FailurePercent and the time after which a healthy instance is
	// forgiven one past ejection. Default 10s.
	Interval time.Duration
	// BaseEjectionTime is the ejection time of a first ejection. Default 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps the ejection time; 0 means no cap. Default 300s.
	MaxEjectionTime time.Duration
	// MaxEjectionPercent caps the share of instances ejected at once (at least one may be). 0
	// disables ejection. Default 50.
	MaxEjectionPercent int
	// PanicPercent is the healthy share below which panic mode starts; 0 disables panic mode.
	// Default 50.
	PanicPercent int
	// LatencyFactor is how many times slower than the median instance a call must be to count as
	// slow; 0 disables latency ejection, otherwise it must be above 1. Default 0 (off).
	LatencyFactor float64
	// LatencyMin is the latency below which no call counts as slow, whatever the median (a 2 ms call
	// is not an outlier because the others take 0.2 ms). Default 100ms.
	LatencyMin time.Duration
	// ConsecutiveSlow ejects after this many slow calls in a row; 0 disables latency ejection.
	// Default 5.
	ConsecutiveSlow int
}

// Latency ejection constants (see Outlier).
const (
	// latencyMinInstances is how many instances need a latency estimate for the median to be used.
	latencyMinInstances = 3
	// latencyRefresh is how often the median is recomputed, at most.
	latencyRefresh = time.Second
)

// DefaultOutlier returns the default outlier settings, documented on the fields of Outlier.
func DefaultOutlier() Outlier {
	return Outlier{
		ConsecutiveFailures: 5,
		FailurePercent:      50,
		MinRequests:         20,
		Interval:            10 * time.Second,
		BaseEjectionTime:    30 * time.Second,
		MaxEjectionTime:     300 * time.Second,
		MaxEjectionPercent:  50,
		PanicPercent:        50,
		LatencyMin:          100 * time.Millisecond,
		ConsecutiveSlow:     5,
	}
}

func (c Outlier) validate() error {
	var errs []error
	pct := func(name string, v int) {
		if v < 0 || v > 100 {
			errs = append(errs, fmt.Errorf("lb: outlier %s %d: must be 0-100", name, v))
		}
	}
	pct("FailurePercent", c.FailurePercent)
	pct("MaxEjectionPercent", c.MaxEjectionPercent)
	pct("PanicPercent", c.PanicPercent)
	if c.ConsecutiveFailures < 0 || c.MinRequests < 0 || c.ConsecutiveSlow < 0 {
		errs = append(errs, errors.New("lb: outlier ConsecutiveFailures, MinRequests and ConsecutiveSlow must not be negative"))
	}
	if c.LatencyFactor != 0 && !(c.LatencyFactor > 1) {
		errs = append(errs, fmt.Errorf("lb: outlier LatencyFactor %g: must be 0 (off) or above 1", c.LatencyFactor))
	}
	if c.FailurePercent > 0 && c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("lb: outlier Interval %v: must be positive when FailurePercent is set", c.Interval))
	}
	if c.Interval < 0 || c.BaseEjectionTime < 0 || c.MaxEjectionTime < 0 || c.LatencyMin < 0 {
		errs = append(errs, errors.New("lb: outlier durations must not be negative"))
	}
	if c.enabled() && c.BaseEjectionTime <= 0 {
		errs = append(errs, errors.New("lb: outlier BaseEjectionTime must be positive when ejection is enabled"))
	}
	return errors.Join(errs...)
}

func (c Outlier) enabled() bool {
	return c.MaxEjectionPercent > 0 && (c.ConsecutiveFailures > 0 || c.FailurePercent > 0 || c.latency())
}

// latency reports whether latency ejection is configured.
func (c Outlier) latency() bool { return c.LatencyFactor > 1 && c.ConsecutiveSlow > 0 }

// outcome is what one call tells about an instance.
type outcome uint8

const (
	// ignored calls release the in-flight slot and record nothing (the caller canceled, or the call
	// was refused locally and never reached the instance).
	ignored outcome = iota
	success
	// slow calls record a penalized latency but do not count towards ejection (429, or the caller's
	// own deadline ran out while the instance was working).
	slow
	failure
	// cancelled calls were cut short by the caller (a hedge won, the caller gave up): the instance
	// took at least this long. That raises the latency estimate when above it and is otherwise no
	// evidence; it never counts towards ejection. Without it an instance whose slow calls are always
	// hedged never shows as slow: the hedge cancels each of them before it completes.
	cancelled
)
