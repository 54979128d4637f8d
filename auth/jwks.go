package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// maxFetchWaiters bounds how many requests wait for a running fetch at once; the others are
// answered at once. With the wait bounded by WithFetchWait from the start of the fetch, requests for
// unknown keys hold at most this many server slots, for at most that long, per fetch.
const maxFetchWaiters = 4

// errClosed is returned by Refresh after Close.
var errClosed = errors.New("auth: JWKS closed")

// JWKS is a KeySet fetched from a JSON Web Key Set URL and cached.
//
// Known keys are served from memory and never wait for the network. A token whose key id is not
// known starts a fetch, at most one per WithMinRefresh interval however many such tokens arrive (so
// a flood of forged key ids costs one fetch per interval), and may wait for it: only during the
// first moments of the fetch (four times as long as the last successful fetch took, at least
// 100 ms, at most WithFetchWait), only while its own context lasts, and only four requests at a
// time; the others are refused at once as unknown keys. At most one fetch runs at a time, for every
// caller (requests, Refresh, Run), and WithFetchTimeout bounds it; a fetch that fails or times out
// is recorded like any other, so the next one waits its turn. So a hung endpoint costs one fetch in
// flight and a few briefly waiting requests, never the server's capacity.
//
// A fetched set replaces the keys in use only when it holds at least one usable key: bad keys are
// skipped and reported (RejectedKey, Status, the log and the chassis.auth.jwks.keys.rejected
// gauge), and a set without a usable key counts as a failed fetch. When a fetch fails the keys
// already loaded keep being served; Ready tells whether any key set was ever loaded. Run refreshes
// the set in the background until its context ends; Close ends a running fetch and the metrics. A
// JWKS is safe for concurrent use.
type JWKS struct {
	url          string
	shownURL     string // url without credentials, for messages
	client       *http.Client
	now          func() time.Time
	minRefresh   time.Duration
	interval     time.Duration
	maxBytes     int64
	fetchTimeout time.Duration
	fetchWait    time.Duration
	logger       *slog.Logger
	fetches      metric.Int64Counter

	waiters atomic.Int64

	mu            sync.RWMutex
	keys          keyIndex
	usable        int
	rejected      []RejectedKey // of the document in use
	rejectedSig   string        // rejected, as text: rejections are logged when it changes
	loaded        time.Time     // when the keys in use were fetched
	lastAttempt   time.Time     // start of the last fetch
	lastErr       error
	lastFetchTook time.Duration // of the last successful fetch; -1 before one
	flight        *flight
	cancel        context.CancelFunc // ends flight
	closed        bool
	reg           metric.Registration

	wg sync.WaitGroup // the goroutine of flight
}

// flight is one fetch, shared by everybody who needs it.
type flight struct {
	started time.Time
	window  time.Duration // requests may wait for it until started+window
	done    chan struct{}
	err     error // written before done is closed
}

// minFetchWindow is the least time requests may wait for a fetch once one has succeeded (see
// waitWindow).
const minFetchWindow = 100 * time.Millisecond

// waitWindow is how long after its start a fetch may be waited for: four times as long as the last
// successful fetch took, at least minFetchWindow, at most WithFetchWait (all of it before any fetch
// has succeeded). So a fetch that answers as usual serves the requests that wait for it, and one
// that hangs holds them only a little longer than a normal fetch would have. Called with mu held.
func (j *JWKS) waitWindow() time.Duration {
	if j.lastFetchTook < 0 {
		return j.fetchWait
	}
	return min(j.fetchWait, max(minFetchWindow, 4*j.lastFetchTook))
}

// NewJWKS returns a JWKS for url. Nothing is fetched until the first token arrives or Refresh or
// Run is called. It fails only when the meter provider refuses an instrument.
func NewJWKS(url string, opts ...Option) (*JWKS, error) {
	o := newOptions(opts)
	j := &JWKS{
		url:           url,
		shownURL:      redactURL(url),
		client:        o.client,
		now:           o.now,
		minRefresh:    o.minRefresh,
		interval:      o.refreshInterval,
		maxBytes:      o.maxBytes,
		fetchTimeout:  o.fetchTimeout,
		fetchWait:     o.fetchWait,
		logger:        o.Logger,
		lastFetchTook: -1,
	}
	if err := j.instrument(obs.NewInstruments(o.Meters, semconv.ScopeAuth)); err != nil {
		return nil, fmt.Errorf("auth: jwks metrics: %w", err)
	}
	return j, nil
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

func (j *JWKS) instrument(in *obs.Instruments) error {
	j.fetches = in.Counter(semconv.MetricAuthJWKSFetches, semconv.UnitFetch,
		"JWKS fetches; error.type is set on failures.")
	keys := in.ObservableGauge(semconv.MetricAuthJWKSKeys, semconv.UnitKey,
		"Usable keys of the JWKS in use.")
	rejected := in.ObservableGauge(semconv.MetricAuthJWKSKeysRejected, semconv.UnitKey,
		"Signature keys of the JWKS in use that were refused (too short, off-curve, malformed).")
	age := in.FloatObservableGauge(semconv.MetricAuthJWKSAge, semconv.UnitSeconds,
		"Time since the JWKS in use was fetched; absent until one is loaded.")
	j.reg = in.Register(func(_ context.Context, ob metric.Observer) error {
		j.mu.RLock()
		usable, nrej, loaded := j.usable, len(j.rejected), j.loaded
		j.mu.RUnlock()
		ob.ObserveInt64(keys, int64(usable))
		ob.ObserveInt64(rejected, int64(nrej))
		if !loaded.IsZero() {
			ob.ObserveFloat64(age, j.now().Sub(loaded).Seconds())
		}
		return nil
	}, keys, rejected, age)
	return in.Err()
}

// Key implements KeySet.
func (j *JWKS) Key(ctx context.Context, kid, alg string) (any, error) {
	if k, ok := j.lookup(kid, alg); ok {
		return k, nil
	}
	f := j.join(false)
	if f == nil {
		return nil, ErrUnknownKey
	}
	wait := f.started.Add(f.window).Sub(j.now())
	if wait <= 0 {
		return nil, fmt.Errorf("%w: key set fetch still running", ErrUnknownKey)
	}
	if j.waiters.Add(1) > maxFetchWaiters {
		j.waiters.Add(-1)
		return nil, fmt.Errorf("%w: key set fetch still running", ErrUnknownKey)
	}
	defer j.waiters.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return nil, fmt.Errorf("%w: key set fetch still running", ErrUnknownKey)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnknownKey, ctx.Err())
	}
	if k, ok := j.lookup(kid, alg); ok {
		return k, nil
	}
	if f.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownKey, f.err)
	}
	return nil, ErrUnknownKey
}

// join returns the running fetch, or starts one: always when force is set, otherwise when the last
// one started at least minRefresh ago. It returns nil when there is none to wait for.
func (j *JWKS) join(force bool) *flight {
	j.mu.RLock()
	f, recent, closed := j.flight, j.fetchedRecently(), j.closed
	j.mu.RUnlock()
	if f != nil || closed || (recent && !force) {
		return f // the common case of a flood of forged key ids: no write lock
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.flight != nil || j.closed || (j.fetchedRecently() && !force) {
		return j.flight
	}
	now := j.now()
	f = &flight{started: now, window: j.waitWindow(), done: make(chan struct{})}
	// The fetch serves every caller, so none of their contexts may end it; the timeout and Close do.
	ctx, cancel := context.WithTimeout(context.Background(), j.fetchTimeout)
	j.flight, j.cancel, j.lastAttempt = f, cancel, now
	j.wg.Add(1)
	go j.fly(ctx, cancel, f)
	return f
}

// fetchedRecently is called with mu held.
func (j *JWKS) fetchedRecently() bool {
	return !j.lastAttempt.IsZero() && j.now().Sub(j.lastAttempt) < j.minRefresh
}

// fly runs one fetch and publishes its result.
func (j *JWKS) fly(ctx context.Context, cancel context.CancelFunc, f *flight) {
	defer j.wg.Done()
	defer cancel()
	set, err := j.get(ctx)
	if err == nil && len(set.Keys) == 0 {
		err = &fetchError{class: semconv.ReasonInvalidKeySet, err: noUsableKey(set.Rejected)}
	}
	j.mu.Lock()
	closed := j.closed
	prevErr, firstLoad, sig := j.lastErr, j.loaded.IsZero(), j.rejectedSig
	if err == nil {
		j.keys = indexKeys(set.Keys)
		j.usable, j.rejected, j.loaded = len(set.Keys), set.Rejected, j.now()
		j.lastFetchTook = max(0, j.loaded.Sub(f.started))
		j.rejectedSig = rejectedText(set.Rejected)
	}
	if !closed {
		j.lastErr = err
	}
	j.flight, j.cancel = nil, nil
	usable, loaded := j.usable, j.loaded
	j.mu.Unlock()
	f.err = err
	if !closed { // else canceled by Close: nothing to say about the endpoint
		j.report(ctx, err, prevErr, firstLoad, usable, loaded, set.Rejected, sig)
	}
	close(f.done) // after the report, so that whoever waited sees the fetch counted and logged
}

// report counts a fetch and logs what an operator needs to know: failures, the recovery after
// one, the first load, and keys refused (when the set of refusals changes).
func (j *JWKS) report(ctx context.Context, err, prevErr error, firstLoad bool, usable int, loaded time.Time, rejected []RejectedKey, prevSig string) {
	ctx = context.WithoutCancel(ctx)
	if err != nil {
		j.fetches.Add(ctx, 1, metric.WithAttributes(attribute.String(semconv.AttrErrorType, errorClass(err))))
	} else {
		j.fetches.Add(ctx, 1)
	}
	if err != nil {
		attrs := []any{"url", j.shownURL, "error", err.Error(), "error.type", errorClass(err)}
		if loaded.IsZero() {
			attrs = append(attrs, "keys_in_use", 0)
			j.logger.ErrorContext(ctx, "jwks: fetch failed and no key set is loaded: every token is refused", attrs...)
		} else {
			attrs = append(attrs, "keys_in_use", usable, "keys_age", j.now().Sub(loaded).Round(time.Second).String())
			j.logger.WarnContext(ctx, "jwks: fetch failed; serving the keys loaded before", attrs...)
		}
		return
	}
	switch {
	case firstLoad:
		j.logger.InfoContext(ctx, "jwks: key set loaded", "url", j.shownURL, "keys", usable, "rejected", len(rejected))
	case prevErr != nil:
		j.logger.InfoContext(ctx, "jwks: fetch succeeded again", "url", j.shownURL, "keys", usable, "rejected", len(rejected))
	}
	if rejectedText(rejected) != prevSig {
		for _, r := range rejected {
			j.logger.WarnContext(ctx, "jwks: key rejected", "url", j.shownURL, "kid", clip(r.KeyID), "kty", clip(r.Type), "index", r.Index, "reason", r.Err.Error())
		}
	}
}

func rejectedText(r []RejectedKey) string {
	var b strings.Builder
	for _, k := range r {
		b.WriteString(k.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

// noUsableKey is the error of a set without a usable key, on one line (it goes into logs).
func noUsableKey(rejected []RejectedKey) error {
	if len(rejected) == 0 {
		return errors.New("the key set holds no usable signature key")
	}
	return &noUsableKeyError{rejected}
}

type noUsableKeyError struct{ rejected []RejectedKey }

func (e *noUsableKeyError) Error() string {
	var b strings.Builder
	b.WriteString("the key set holds no usable signature key: ")
	for i, r := range e.rejected {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.Error())
	}
	return b.String()
}

// Unwrap returns each rejection.
func (e *noUsableKeyError) Unwrap() []error {
	errs := make([]error, len(e.rejected))
	for i, r := range e.rejected {
		errs[i] = r
	}
	return errs
}

func (j *JWKS) lookup(kid, alg string) (any, bool) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.keys.find(kid, alg)
}

// Refresh fetches the key set now, or waits for the fetch already running, until ctx ends. On
// failure the keys already loaded are kept. After Close it returns an error at once.
func (j *JWKS) Refresh(ctx context.Context) error {
	f := j.join(true)
	if f == nil {
		return errClosed
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err returns the error of the last fetch, nil if it succeeded.
func (j *JWKS) Err() error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.lastErr
}

// Ready returns nil once a key set with at least one usable key has been loaded, and keeps
// returning nil while later fetches fail, since the keys loaded last are still served (see Err for
// the freshness). Until then it says why nothing is loaded. Its signature fits a health check.
func (j *JWKS) Ready(context.Context) error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	switch {
	case !j.loaded.IsZero():
		return nil
	case j.lastErr != nil:
		return fmt.Errorf("no JWKS loaded from %s: %w", j.shownURL, j.lastErr)
	case j.flight != nil:
		return fmt.Errorf("no JWKS loaded from %s yet: first fetch running", j.shownURL)
	}
	return fmt.Errorf("no JWKS loaded from %s yet", j.shownURL)
}

// JWKSStatus describes a JWKS, for diagnostics.
type JWKSStatus struct {
	Keys        int           // usable keys in use
	Rejected    []RejectedKey // keys of the set in use that were refused
	Loaded      time.Time     // when the set in use was fetched; zero before the first success
	LastAttempt time.Time     // when the last fetch started
	Err         error         // error of the last fetch, nil if it succeeded
	Fetching    bool          // a fetch is running
}

// Status returns the state of the key set.
func (j *JWKS) Status() JWKSStatus {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return JWKSStatus{
		Keys:        j.usable,
		Rejected:    append([]RejectedKey(nil), j.rejected...),
		Loaded:      j.loaded,
		LastAttempt: j.lastAttempt,
		Err:         j.lastErr,
		Fetching:    j.flight != nil,
	}
}

// Run refreshes the key set every WithRefreshInterval until ctx ends, then returns nil. After a
// failure it retries sooner: after 1 s, doubling up to WithMinRefresh (at least 1 s). The caller
// owns the goroutine that runs it.
func (j *JWKS) Run(ctx context.Context) error {
	retry := backoff.Policy{Base: time.Second, Max: max(j.minRefresh, time.Second)}
	failures := 0
	for {
		wait := j.interval
		err := j.Refresh(ctx)
		switch {
		case errors.Is(err, errClosed):
			return nil
		case err != nil && ctx.Err() == nil:
			failures++
			wait = retry.Ceiling(failures)
		default:
			failures = 0
		}
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// Close ends a running fetch and waits for it, stops reporting metrics, and makes later fetches
// fail; the keys already loaded are still served. It is idempotent.
func (j *JWKS) Close() error {
	j.mu.Lock()
	j.closed = true
	if j.cancel != nil {
		j.cancel()
	}
	reg := j.reg
	j.reg = nil
	j.mu.Unlock()
	j.wg.Wait()
	if reg != nil {
		return reg.Unregister()
	}
	return nil
}

// fetchError carries the error.type of a failed fetch.
type fetchError struct {
	class string
	err   error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

func errorClass(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return semconv.ReasonTimeout
	}
	var fe *fetchError
	if errors.As(err, &fe) {
		return fe.class
	}
	return "_OTHER"
}

func (j *JWKS) get(ctx context.Context) (JWKSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return JWKSet{}, fmt.Errorf("jwks %s: %w", j.shownURL, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return JWKSet{}, fmt.Errorf("jwks %s: no answer within %s: %w", j.shownURL, j.fetchTimeout, ctx.Err())
		}
		return JWKSet{}, &fetchError{class: semconv.ReasonConnection, err: fmt.Errorf("jwks: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return JWKSet{}, &fetchError{class: strconv.Itoa(resp.StatusCode), err: fmt.Errorf("jwks %s: status %s", j.shownURL, resp.Status)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, j.maxBytes+1))
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return JWKSet{}, fmt.Errorf("jwks %s: body not read within %s: %w", j.shownURL, j.fetchTimeout, ctx.Err())
		}
		return JWKSet{}, &fetchError{class: semconv.ReasonConnection, err: fmt.Errorf("jwks %s: %w", j.shownURL, err)}
	}
	if int64(len(body)) > j.maxBytes {
		return JWKSet{}, &fetchError{class: semconv.ReasonInvalidKeySet, err: fmt.Errorf("jwks %s: document larger than %d bytes", j.shownURL, j.maxBytes)}
	}
	set, err := ParseJWKS(body)
	if err != nil {
		return JWKSet{}, &fetchError{class: semconv.ReasonInvalidKeySet, err: fmt.Errorf("jwks %s: %w", j.shownURL, err)}
	}
	return set, nil
}
