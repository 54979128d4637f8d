package main

import (
	"math"
	"sort"
	"sync"
	"time"
)

// histogram records latencies in logarithmic buckets (about 2% apart) from 10 µs to ~100 s, in
// constant memory however long the demo runs. Percentiles are the upper bound of the bucket they
// fall in, so they overstate by at most one bucket's width.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	max    time.Duration
}

const (
	histMin     = 10 * time.Microsecond
	histGrowth  = 1.02
	histBuckets = 820 // histMin × 1.02^820 ≈ 110 s
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(histMin)) / logGrowth))
	return min(i, histBuckets-1)
}

func bucketUpper(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.total++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q <= 1), 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == histBuckets-1 { // the overflow bucket has no upper bound but the maximum
				return h.max
			}
			return min(bucketUpper(i), h.max)
		}
	}
	return h.max
}

// outcome classifies one request of the load generator.
type outcome struct {
	at         time.Time
	latency    time.Duration
	status     int // 0: no response
	err        string
	idempotent bool
	degraded   bool
	attempts   int
	servedBy   []string // instances named in X-Served-By
	instance   string   // X-Instance: the gateway that answered, when one did
	detail     string   // the problem details' "detail" of an error response
	op         string
}

func (o outcome) ok() bool { return o.err == "" && o.status >= 200 && o.status < 400 }

// second aggregates the requests that finished in one second of the run.
type second struct {
	T        int64   `json:"t"` // unix seconds
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Degraded int     `json:"degraded"`
	Retried  int     `json:"retried"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	hist     histogram
	served   map[string]int // responses per instance ("pricing-2") named in X-Served-By
	failed   map[failureKey]int
}

// stats collects outcomes. It is safe for concurrent use.
type stats struct {
	mu         sync.Mutex
	start      time.Time
	all        histogram
	requests   int
	ok         int
	idem       int
	idemOK     int
	degraded   int
	retried    int
	attempts   int
	byStatus   map[string]int
	byOp       map[string]*opStats
	served     map[string]map[string]int // service -> instance -> responses in the current window
	servedAll  map[string]map[string]int
	seconds    []*second // the last maxSeconds seconds
	errSamples []string
	failures   map[failureKey]*Failure
}

type opStats struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
}

const maxSeconds = 600

func newStats(start time.Time) *stats {
	return &stats{start: start, byStatus: map[string]int{}, byOp: map[string]*opStats{},
		served: map[string]map[string]int{}, servedAll: map[string]map[string]int{}, failures: map[failureKey]*Failure{}}
}

func (s *stats) record(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.attempts += o.attempts
	ok := o.ok()
	if ok {
		s.ok++
	}
	if o.idempotent {
		s.idem++
		if ok {
			s.idemOK++
		}
	}
	if o.degraded {
		s.degraded++
	}
	if o.attempts > 1 {
		s.retried++
	}
	key := "error"
	if o.status != 0 {
		key = itoa(o.status)
	}
	s.byStatus[key]++
	op := s.byOp[o.op]
	if op == nil {
		op = &opStats{}
		s.byOp[o.op] = op
	}
	op.Requests++
	if ok {
		op.OK++
	} else {
		if len(s.errSamples) < 20 {
			s.errSamples = append(s.errSamples, o.at.Format("15:04:05.000")+" "+o.op+": "+describe(o))
		}
		s.addFailure(o)
	}
	s.all.add(o.latency)
	for _, inst := range o.servedBy {
		svc := serviceOf(inst)
		for _, m := range []map[string]map[string]int{s.served, s.servedAll} {
			if m[svc] == nil {
				m[svc] = map[string]int{}
			}
			m[svc][inst]++
		}
	}
	t := o.at.Unix()
	var sec *second
	if n := len(s.seconds); n > 0 && s.seconds[n-1].T >= t {
		// Late finishers land in the second they finished in or the latest one.
		for i := n - 1; i >= 0; i-- {
			if s.seconds[i].T == t {
				sec = s.seconds[i]
				break
			}
		}
		if sec == nil {
			sec = s.seconds[n-1]
		}
	} else {
		sec = &second{T: t}
		s.seconds = append(s.seconds, sec)
		if len(s.seconds) > maxSeconds {
			s.seconds = s.seconds[1:]
		}
	}
	sec.Requests++
	if !ok {
		sec.Errors++
		if sec.failed == nil {
			sec.failed = map[failureKey]int{}
		}
		sec.failed[keyOf(o)]++
	}
	if o.degraded {
		sec.Degraded++
	}
	if o.attempts > 1 {
		sec.Retried++
	}
	sec.hist.add(o.latency)
	for _, inst := range o.servedBy {
		if sec.served == nil {
			sec.served = map[string]int{}
		}
		sec.served[inst]++
	}
}

// shareBetween returns how many of service's responses in the whole seconds within [from, to) came
// from the instance id, and how many there were in all. Seconds that straddle from or to are left
// out, so that a window measures only its own traffic.
func (s *stats) shareBetween(service, id string, from, to time.Time) shareCount {
	first := from.Unix()
	if from.After(time.Unix(first, 0)) {
		first++
	}
	last := to.Unix() - 1 // the second starting at to.Unix() is not before to
	s.mu.Lock()
	defer s.mu.Unlock()
	var c shareCount
	for _, sec := range s.seconds {
		if sec.T < first || sec.T > last {
			continue
		}
		for inst, n := range sec.served {
			if serviceOf(inst) == service {
				c.all += n
				if inst == id {
					c.mine += n
				}
			}
		}
	}
	return c
}

// shareCount is one instance's responses among its service's, in a window.
type shareCount struct{ mine, all int }

// share is the instance's fraction of the service's responses; ok is false without any.
func (c shareCount) share() (float64, bool) {
	if c.all == 0 {
		return 0, false
	}
	return float64(c.mine) / float64(c.all), true
}

func describe(o outcome) string {
	if o.err != "" {
		return o.err
	}
	return "HTTP " + itoa(o.status)
}

// serviceOf returns "pricing" for the instance name "pricing-2".
func serviceOf(instance string) string {
	for i := len(instance) - 1; i >= 0; i-- {
		if instance[i] == '-' {
			return instance[:i]
		}
	}
	return instance
}

// takeShare returns each service's response count per instance since the last call, and resets it.
func (s *stats) takeShare() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.served
	s.served = map[string]map[string]int{}
	return out
}

// window returns the per-second series (percentiles filled in), oldest first.
func (s *stats) window(n int) []second {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := max(0, len(s.seconds)-n)
	out := make([]second, 0, len(s.seconds)-from)
	for _, sec := range s.seconds[from:] {
		c := *sec
		c.P50Ms = ms(sec.hist.quantile(0.5))
		c.P99Ms = ms(sec.hist.quantile(0.99))
		c.hist, c.served, c.failed = histogram{}, nil, nil
		out = append(out, c)
	}
	return out
}

// between returns the requests and failures that finished in [from, to].
func (s *stats) between(from, to time.Time) (requests, failures int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sec := range s.seconds {
		if sec.T >= from.Unix() && sec.T <= to.Unix() {
			requests += sec.Requests
			failures += sec.Errors
		}
	}
	return requests, failures
}

// p99Between returns the p99 latency of the seconds in [from, to].
func (s *stats) p99Between(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var h histogram
	for _, sec := range s.seconds {
		if sec.T >= from.Unix() && sec.T <= to.Unix() {
			h.merge(&sec.hist)
		}
	}
	return h.quantile(0.99)
}

// failuresBetween classifies the failures that finished in the seconds of [from, to], most first.
func (s *stats) failuresBetween(from, to time.Time) []Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[failureKey]int{}
	for _, sec := range s.seconds {
		if sec.T >= from.Unix() && sec.T <= to.Unix() {
			for k, n := range sec.failed {
				m[k] += n
			}
		}
	}
	out := make([]Failure, 0, len(m))
	for k, n := range m {
		out = append(out, Failure{failureKey: k, Count: n})
	}
	sortFailures(out)
	return out
}

// lastFailure returns the end of the last second in [from, to] with a failure, or zero.
func (s *stats) lastFailure(from, to time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, sec := range s.seconds {
		if sec.T >= from.Unix() && sec.T <= to.Unix() && sec.Errors > 0 {
			last = time.Unix(sec.T+1, 0)
		}
	}
	return last
}

// Totals is the load generator's overall result.
type Totals struct {
	Requests       int                       `json:"requests"`
	OK             int                       `json:"ok"`
	SuccessRate    float64                   `json:"success_rate"`
	Idempotent     int                       `json:"idempotent_requests"`
	IdempotentOK   int                       `json:"idempotent_ok"`
	IdempotentRate float64                   `json:"idempotent_success_rate"`
	Degraded       int                       `json:"degraded"`
	Retried        int                       `json:"retried"`
	Attempts       int                       `json:"attempts"`
	P50Ms          float64                   `json:"p50_ms"`
	P99Ms          float64                   `json:"p99_ms"`
	P999Ms         float64                   `json:"p999_ms"`
	MaxMs          float64                   `json:"max_ms"`
	ByStatus       map[string]int            `json:"by_status"`
	ByOp           map[string]opStats        `json:"by_operation"`
	Share          map[string]map[string]int `json:"share"`
	ErrorSamples   []string                  `json:"error_samples,omitempty"`
	// Failures explains every failed request: their counts add up to Requests - OK.
	Failures []Failure `json:"failures"`
}

func (s *stats) totals() Totals {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := Totals{
		Requests: s.requests, OK: s.ok, Idempotent: s.idem, IdempotentOK: s.idemOK, Degraded: s.degraded,
		Retried: s.retried, Attempts: s.attempts,
		P50Ms: ms(s.all.quantile(0.5)), P99Ms: ms(s.all.quantile(0.99)), P999Ms: ms(s.all.quantile(0.999)),
		MaxMs: ms(s.all.max), ByStatus: map[string]int{}, ByOp: map[string]opStats{}, Share: map[string]map[string]int{},
		ErrorSamples: append([]string(nil), s.errSamples...),
	}
	t.SuccessRate = rate(s.ok, s.requests)
	t.IdempotentRate = rate(s.idemOK, s.idem)
	for k, v := range s.byStatus {
		t.ByStatus[k] = v
	}
	for k, v := range s.byOp {
		t.ByOp[k] = *v
	}
	t.Failures = make([]Failure, 0, len(s.failures))
	for _, f := range s.failures {
		t.Failures = append(t.Failures, *f)
	}
	sortFailures(t.Failures)
	for svc, m := range s.servedAll {
		t.Share[svc] = map[string]int{}
		for k, v := range m {
			t.Share[svc][k] = v
		}
	}
	return t
}

func rate(ok, n int) float64 {
	if n == 0 {
		return 1
	}
	return float64(ok) / float64(n)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*100) / 100 }

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
