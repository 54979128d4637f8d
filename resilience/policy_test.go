package resilience

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestBudgetRatioAndFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := policy.NewBudget(0.2, 1, 10*time.Second) // floor: 10 tokens per window
		for range 100 {
			b.Deposit()
		}
		n := 0
		for b.TryWithdraw() {
			n++
		}
		if n != 30 { // 10 floor + 20% of 100
			t.Fatalf("withdrawn %d, want 30", n)
		}
		// Everything expires after the window: only the floor is back.
		time.Sleep(10 * time.Second)
		if got := b.Tokens(); got != 10 {
			t.Fatalf("tokens after window = %v, want 10", got)
		}
		// Half a window later, deposits made now still count, older ones are gone.
		for range 50 {
			b.Deposit()
		}
		time.Sleep(5 * time.Second)
		if got := b.Tokens(); got != 20 {
			t.Fatalf("tokens = %v, want 20", got)
		}
		time.Sleep(5 * time.Second)
		if got := b.Tokens(); got != 10 {
			t.Fatalf("tokens after expiry = %v, want 10", got)
		}
	})
}

func TestBudgetInjectedClock(t *testing.T) {
	now := time.Unix(1000, 0)
	b := policy.NewBudget(0.5, 0, time.Second, policy.WithBudgetClock(func() time.Time { return now }))
	b.Deposit()
	b.Deposit()
	if !b.TryWithdraw() || b.TryWithdraw() {
		t.Fatal("want exactly one token from two deposits at 50%")
	}
	now = now.Add(time.Second)
	if b.TryWithdraw() {
		t.Fatal("deposits should have expired")
	}
}

func TestBreakerOpensHalfOpensCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newTestBreaker(policy.BreakerConfig{Failures: 3, Delay: time.Second, Successes: 1}, "i1")
		for range 3 {
			if err := b.Allow(); err != nil {
				t.Fatal(err)
			}
			b.Record(policy.Failure)
		}
		err := b.Allow()
		var re *RejectedError
		if !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, circuitbreaker.ErrOpen) || !errors.As(err, &re) || re.Instance != "i1" {
			t.Fatalf("open breaker: got %v", err)
		}
		if b.Available() {
			t.Fatal("open breaker reported available")
		}
		time.Sleep(1300 * time.Millisecond) // delay 1s ±20%
		if !b.Available() {
			t.Fatal("breaker not available after its delay")
		}
		if err := b.Allow(); err != nil {
			t.Fatalf("probe refused: %v", err)
		}
		if b.State() != policy.HalfOpen {
			t.Fatalf("state %v, want half-open", b.State())
		}
		b.Record(policy.Success)
		if b.State() != policy.Closed {
			t.Fatalf("state %v after a good probe, want closed (go-zero #4101: close promptly)", b.State())
		}
	})
}

func TestBreakerIgnoredOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newTestBreaker(policy.BreakerConfig{Failures: 2, Delay: time.Second}, "")
		// Cancellations and local rejections never open it (Kratos #2777).
		for range 10 {
			_ = b.Allow()
			b.Record(policy.Ignored)
		}
		if b.State() != policy.Closed {
			t.Fatal("ignored outcomes opened the breaker")
		}
		_ = b.Allow()
		b.Record(policy.Failure)
		_ = b.Allow()
		b.Record(policy.Failure)
		time.Sleep(2 * time.Second)
		// The only probe is cancelled: the permit must come back, or the breaker rejects forever.
		if err := b.Allow(); err != nil {
			t.Fatal(err)
		}
		if err := b.Allow(); err == nil {
			t.Fatal("second concurrent probe allowed with 1 permit")
		}
		b.Record(policy.Ignored)
		if err := b.Allow(); err != nil {
			t.Fatalf("probe permit not returned after a cancelled probe: %v", err)
		}
		b.Record(policy.Success)
		if b.State() != policy.Closed {
			t.Fatalf("state %v", b.State())
		}
	})
}

func TestBreakerRatioAndTimeBased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ratio := newTestBreaker(policy.BreakerConfig{Failures: 2, Window: 4, Delay: time.Second}, "")
		for _, o := range []policy.Outcome{policy.Failure, policy.Success, policy.Failure} {
			_ = ratio.Allow()
			ratio.Record(o)
		}
		if ratio.State() != policy.Open {
			t.Fatalf("ratio breaker: %v, want open after 2 of the last 3", ratio.State())
		}
		timed := newTestBreaker(policy.BreakerConfig{FailureRate: 0.5, MinCalls: 4, Period: 10 * time.Second, Delay: time.Second}, "")
		for range 3 {
			_ = timed.Allow()
			timed.Record(policy.Failure)
		}
		if timed.State() != policy.Closed {
			t.Fatal("time-based breaker opened below MinCalls")
		}
		time.Sleep(11 * time.Second) // the failures leave the window
		for _, o := range []policy.Outcome{policy.Success, policy.Success, policy.Success, policy.Failure} {
			_ = timed.Allow()
			timed.Record(o)
		}
		if timed.State() != policy.Closed {
			t.Fatal("old failures still counted")
		}
		_ = timed.Allow()
		timed.Record(policy.Failure)
		_ = timed.Allow()
		timed.Record(policy.Failure)
		if timed.State() != policy.Open {
			t.Fatalf("time-based breaker: %v, want open at 3/6", timed.State())
		}
	})
}

func TestRetryIdempotentStatusesAndBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a", "b", "c")
		rec.steps["a"] = []step{{status: 503}}
		rec.steps["b"] = []step{{status: 502}}
		rt := retryPolicy(retryConfig{MaxAttempts: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}, nil)(rec)
		start := time.Now()
		resp, err := get(t, t.Context(), rt, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := readClose(t, resp); got != "c" {
			t.Fatalf("answer from %q, want c", got)
		}
		if want := []string{"a", "b", "c"}; !slices.Equal(rec.Calls(), want) {
			t.Fatalf("attempts %v, want %v (each retry re-picks)", rec.Calls(), want)
		}
		// Full jitter: at most 100ms + 200ms in total.
		if el := time.Since(start); el > 300*time.Millisecond {
			t.Fatalf("backoff took %v, over the full-jitter bound", el)
		}

		// POST is not retried on a 503 ...
		rec = newRecorder("a", "b")
		rec.steps["a"] = []step{{status: 503}}
		rt = retryPolicy(retryConfig{MaxAttempts: 3}, nil)(rec)
		resp, _ = get(t, t.Context(), rt, http.MethodPost, "x")
		resp.Body.Close()
		if resp.StatusCode != 503 || len(rec.Calls()) != 1 {
			t.Fatalf("POST retried: %v", rec.Calls())
		}
		// ... but is when marked, with its body replayed.
		rec = newRecorder("a", "b")
		rec.steps["a"] = []step{{status: 503}}
		rt = retryPolicy(retryConfig{MaxAttempts: 3}, nil)(rec)
		req, _ := http.NewRequestWithContext(MarkRetryable(t.Context()), http.MethodPost, "http://x/", io.NopCloser(strings.NewReader("payload")))
		resp, err = rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("marked POST: %v %v", resp, err)
		}
		resp.Body.Close()
		if !slices.Equal(rec.bodies, []string{"payload", "payload"}) {
			t.Fatalf("bodies %q, want the payload twice", rec.bodies)
		}
		// A POST whose connection was refused was never sent: safe to retry.
		rec = newRecorder("a", "b")
		rec.steps["a"] = []step{{err: &net_OpError}}
		rt = retryPolicy(retryConfig{MaxAttempts: 3}, nil)(rec)
		resp, err = get(t, t.Context(), rt, http.MethodPost, "x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !slices.Equal(rec.Calls(), []string{"a", "b"}) {
			t.Fatalf("refused POST: attempts %v", rec.Calls())
		}
	})
}

func TestRetryAfterHonouredAndCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a", "b")
		rec.steps["a"] = []step{{status: 429, header: http.Header{"Retry-After": {"1"}}}}
		rt := retryPolicy(retryConfig{MaxAttempts: 2, RetryAfterMax: 2 * time.Second}, nil)(rec)
		start := time.Now()
		resp, err := get(t, t.Context(), rt, http.MethodGet, "")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
		if el := time.Since(start); el != time.Second {
			t.Fatalf("waited %v, want Retry-After's 1s", el)
		}
		rec = newRecorder("a", "b")
		rec.steps["a"] = []step{{status: 503, header: http.Header{"Retry-After": {"30"}}}}
		rt = retryPolicy(retryConfig{MaxAttempts: 2, RetryAfterMax: 2 * time.Second}, nil)(rec)
		resp, _ = get(t, t.Context(), rt, http.MethodGet, "")
		resp.Body.Close()
		if resp.StatusCode != 503 || len(rec.Calls()) != 1 {
			t.Fatal("a Retry-After above the cap must end the retries")
		}
	})
}

func TestRetryBudgetExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a")
		rec.steps["a"] = []step{{err: io.ErrUnexpectedEOF}}
		b := policy.NewBudget(0.2, 0, 10*time.Second)
		rt := retryPolicy(retryConfig{MaxAttempts: 5}, b)(rec)
		var exhausted int
		for range 100 {
			_, err := get(t, t.Context(), rt, http.MethodGet, "")
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("lost the attempt's error: %v", err)
			}
			if errors.Is(err, ErrBudgetExhausted) {
				exhausted++
			}
		}
		// 100 calls may add at most 20 retries: amplification <= 1.2.
		if n := len(rec.Calls()); n > 120 {
			t.Fatalf("%d attempts for 100 calls: budget not enforced", n)
		}
		if exhausted < 80 {
			t.Fatalf("only %d calls reported ErrBudgetExhausted", exhausted)
		}
	})
}

func TestRetryBreakerOpenNeedsNoBudgetAndNoBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a", "b")
		rec.steps["a"] = []step{{err: &RejectedError{Reason: semconv.ReasonBreakerOpen}}}
		b := policy.NewBudget(0, 0, time.Second) // no tokens at all
		rt := retryPolicy(retryConfig{MaxAttempts: 2, BaseDelay: time.Second}, b)(rec)
		start := time.Now()
		resp, err := get(t, t.Context(), rt, http.MethodPost, "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if time.Since(start) != 0 {
			t.Fatal("slept before re-picking after a local breaker rejection")
		}
	})
}

func TestTimeoutTyped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a")
		rec.steps["a"] = []step{{delay: time.Hour}}
		rt := timeoutPolicy(time.Second)(rec)
		start := time.Now()
		_, err := get(t, t.Context(), rt, http.MethodGet, "")
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("got %v after %v", err, time.Since(start))
		}
		// The caller's own earlier deadline: its error, not ours.
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err = get(t, ctx, rt, http.MethodGet, "")
		if errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("caller deadline reported as %v", err)
		}
	})
}

func TestBulkheadFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a")
		rec.steps["a"] = []step{{delay: time.Second}}
		bh := policy.NewBulkhead(1, 100*time.Millisecond)
		rt := wrapBulkhead(bh, newOptions(nil).instruments())(rec)
		done := make(chan struct{})
		go func() {
			resp, err := get(t, t.Context(), rt, http.MethodGet, "")
			if err == nil {
				readClose(t, resp)
			}
			close(done)
		}()
		synctest.Wait()
		start := time.Now()
		_, err := get(t, t.Context(), rt, http.MethodGet, "")
		if !errors.Is(err, ErrBulkheadFull) || time.Since(start) != 100*time.Millisecond {
			t.Fatalf("got %v after %v, want ErrBulkheadFull after the 100ms wait", err, time.Since(start))
		}
		<-done
		// The permit is back once the body was closed.
		if err := bh.Acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
		bh.Release()
	})
}

func TestHedgeWinsAndCancelsLoser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("slow", "fast")
		rec.steps["slow"] = []step{{delay: time.Second}}
		rec.steps["fast"] = []step{{delay: 10 * time.Millisecond}}
		b := policy.NewBudget(0.5, 0, 10*time.Second)
		b.Deposit()
		b.Deposit()
		rt := hedgePolicy(hedgeConfig{Delay: 50 * time.Millisecond}, b)(rec)
		start := time.Now()
		resp, err := get(t, t.Context(), rt, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := readClose(t, resp); got != "fast" {
			t.Fatalf("winner %q", got)
		}
		if el := time.Since(start); el != 60*time.Millisecond {
			t.Fatalf("took %v, want 50ms delay + 10ms", el)
		}
		if b.Tokens() != 0 {
			t.Fatalf("hedge did not take a budget token: %v left", b.Tokens())
		}
		// Budget empty: no hedge, the slow answer is waited for.
		resp, err = get(t, t.Context(), rt, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := readClose(t, resp); got != "slow" || len(rec.Calls()) != 3 {
			t.Fatalf("winner %q calls %v", got, rec.Calls())
		}
	})
}

func TestHedgePercentileDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		rt := hedgePolicy(hedgeConfig{Percentile: 0.9}, nil)(roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			d := 10 * time.Millisecond
			if n.Add(1)%20 == 0 { // 5% slow: p90 is the fast mode
				d = 500 * time.Millisecond
			}
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}))
		for range 200 {
			resp, err := get(t, t.Context(), rt, http.MethodGet, "")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		d := rt.(*hedger).delay()
		if d < 10*time.Millisecond || d > 15*time.Millisecond {
			t.Fatalf("p90 delay estimate %v, want about 10ms (bucket upper bound)", d)
		}
		// Slow calls now get hedged after ~p90 instead of taking 500ms.
		before := n.Load()
		for range 20 {
			start := time.Now()
			resp, _ := get(t, t.Context(), rt, http.MethodGet, "")
			resp.Body.Close()
			if time.Since(start) > 100*time.Millisecond {
				t.Fatalf("call took %v despite hedging", time.Since(start))
			}
		}
		if n.Load()-before <= 20 {
			t.Fatal("no hedges sent")
		}
	})
}

func TestDeadlinePropagation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("a")
		rt := Chain(rec, timeoutPolicy(time.Second), propagateDeadline(5*time.Millisecond))
		resp, err := get(t, t.Context(), rt, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := rec.headers[0].Get(TimeoutHeader); got != "995" {
			t.Fatalf("%s = %q, want 995", TimeoutHeader, got)
		}
		var seen time.Duration
		h := deadlineMiddleware(500 * time.Millisecond)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dl, _ := r.Context().Deadline()
			seen = time.Until(dl)
		}))
		for _, c := range []struct {
			hdr  string
			want time.Duration
		}{{"995", 500 * time.Millisecond}, {"200", 200 * time.Millisecond}, {"", 500 * time.Millisecond}, {"-3", 500 * time.Millisecond}} {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			if c.hdr != "" {
				r.Header.Set(TimeoutHeader, c.hdr)
			}
			h.ServeHTTP(nil, r)
			if seen != c.want {
				t.Errorf("header %q: deadline in %v, want %v", c.hdr, seen, c.want)
			}
		}
	})
}

func TestFallback(t *testing.T) {
	rec := newRecorder("a")
	rec.steps["a"] = []step{{status: 503}}
	rt := Fallback(func(r *http.Request, status int, err error) (*http.Response, error) {
		if status != 503 {
			t.Errorf("status %d", status)
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("cached"))}, nil
	})(rec)
	resp, err := get(t, t.Context(), rt, http.MethodGet, "")
	if err != nil || readClose(t, resp) != "cached" {
		t.Fatal("fallback not used")
	}
}

func TestConfigValidateListsEverything(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Retries, c.HedgePercentile, c.BreakerFailureRate = -1, 2, 3
	err := c.Validate()
	for _, w := range []string{"RETRIES", "HEDGE_PERCENTILE", "BREAKER_FAILURE_RATE"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not mention %s", err, w)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5", "99999999999"} {
		f.Add(s)
	}
	now := time.Date(2015, 10, 21, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("%q: %v %v", s, d, ok)
		}
	})
}

func FuzzParseTimeoutHeader(f *testing.F) {
	for _, s := range []string{"", "1", "995", "0", "-5", "9223372036854775807", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseTimeoutHeader(s)
		if ok != (d > 0) {
			t.Fatalf("%q: %v %v", s, d, ok)
		}
		// The same as strconv for the digits-only values the header carries; never an allocation.
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil && s != "" && s[0] != '+' && s[0] != '-' {
			want := ms > 0 && ms <= int64(time.Duration(1<<63-1)/time.Millisecond)
			if ok != want || ok && d != time.Duration(ms)*time.Millisecond {
				t.Fatalf("%q: %v %v, strconv says %d", s, d, ok, ms)
			}
		} else if ok {
			t.Fatalf("%q accepted: %v", s, d)
		}
		if n := testing.AllocsPerRun(1, func() { parseTimeoutHeader(s) }); n != 0 {
			t.Fatalf("%q: %v allocations", s, n)
		}
	})
}

func TestBreakerOpensAtOnceOnRefusedConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newTestBreaker(policy.BreakerConfig{Failures: 5, Delay: time.Second}, "dead")
		rec := newRecorder("dead")
		rec.steps["dead"] = []step{{err: &net_OpError}}
		rt := b.Wrap(rec)
		if _, err := get(t, t.Context(), rt, http.MethodGet, ""); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatal(err)
		}
		if b.State() != policy.Open {
			t.Fatalf("state %v after a refused connection, want open", b.State())
		}
	})
}
