package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudchassis/kit/guard"
)

// Config sizes the experiment.
type Config struct {
	Workers  int           // service concurrency
	Service  time.Duration // time per request on a worker
	Phase    time.Duration // length of each measured phase
	Warmup   time.Duration // start of an overload phase that is not measured (the limit converging)
	Overload float64       // offered load / capacity
	Timeout  time.Duration // client timeout: a later answer is not goodput
	MaxReqs  int           // bound on requests per phase
}

// DefaultConfig is a service of 500 requests/s nominal capacity (10 workers × 20 ms): small enough
// that the load generator on the same 2-core machine is not the bottleneck at 3×.
func DefaultConfig() Config {
	return Config{Workers: 10, Service: 20 * time.Millisecond, Phase: 5 * time.Second, Warmup: 2 * time.Second,
		Overload: 3, Timeout: 2 * time.Second, MaxReqs: 100_000}
}

// Phase is what one phase measured.
type Phase struct {
	Name     string
	Offered  float64 // requests/s sent
	Goodput  float64 // 200s within the client timeout, per second
	Shed     float64 // 503s per second
	Timeouts float64 // client timeouts per second
	Errors   float64 // other transport errors per second (refused, reset)
	P50, P99 time.Duration
}

func (p Phase) String() string {
	return fmt.Sprintf("%-22s offered %5.0f/s  goodput %5.0f/s  shed %5.0f/s  timeouts %5.0f/s  errors %4.0f/s  admitted p50 %8v  p99 %8v",
		p.Name, p.Offered, p.Goodput, p.Shed, p.Timeouts, p.Errors, p.P50.Round(100*time.Microsecond), p.P99.Round(100*time.Microsecond))
}

// Report holds every phase.
type Report struct {
	Unloaded, Capacity, Off, On Phase
}

func (r Report) String() string {
	return fmt.Sprintf("%v\n%v\n%v\n%v\nshedding on: goodput %.0f%% of capacity, admitted p99 %.2f× unloaded p99\nshedding off: goodput %.0f%% of capacity, admitted p99 %.2f× unloaded p99",
		r.Unloaded, r.Capacity, r.On, r.Off,
		100*r.On.Goodput/r.Capacity.Goodput, float64(r.On.P99)/float64(r.Unloaded.P99),
		100*r.Off.Goodput/r.Capacity.Goodput, float64(r.Off.P99)/float64(r.Unloaded.P99))
}

// backend has a fixed capacity: Workers requests at a time, Service each. Work that has started
// finishes even if the client left, as real work does.
func backend(cfg Config) http.Handler {
	sem := make(chan struct{}, cfg.Workers)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		time.Sleep(cfg.Service)
		<-sem
		io.WriteString(w, "ok\n")
	})
}

// serve runs h on 127.0.0.1 until the returned stop is called.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

type sample struct {
	at      time.Duration
	status  int
	latency time.Duration
}

func newClient(cfg Config) (*http.Client, func()) {
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second}
	return &http.Client{Transport: tr, Timeout: cfg.Timeout}, tr.CloseIdleConnections
}

// Pseudo status codes for requests that got no response.
const (
	statusTimeout = -1
	statusError   = -2
)

func do(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return statusTimeout
		}
		return statusError
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// openLoop sends rate requests/s for dur whatever the answers, each on its own goroutine, and
// returns every sample.
func openLoop(ctx context.Context, cfg Config, url string, rate float64, dur time.Duration) []sample {
	c, closeIdle := newClient(cfg)
	defer closeIdle()
	var mu sync.Mutex
	out := make([]sample, 0, int(rate*dur.Seconds()))
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; i < cfg.MaxReqs && ctx.Err() == nil; i++ {
		at := time.Duration(i) * interval
		if at >= dur {
			break
		}
		if d := time.Until(start.Add(at)); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() {
			t0 := time.Now()
			st := do(c, url)
			s := sample{at: at, status: st, latency: time.Since(t0)}
			mu.Lock()
			out = append(out, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// closedLoop keeps n requests in flight for dur: the throughput is the capacity.
func closedLoop(ctx context.Context, cfg Config, url string, n int, dur time.Duration) []sample {
	c, closeIdle := newClient(cfg)
	defer closeIdle()
	var mu sync.Mutex
	var out []sample
	var count atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Since(start) < dur && ctx.Err() == nil && count.Add(1) <= int64(cfg.MaxReqs) {
				t0 := time.Now()
				st := do(c, url)
				mu.Lock()
				out = append(out, sample{at: t0.Sub(start), status: st, latency: time.Since(t0)})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

func summarize(name string, ss []sample, from, to time.Duration, offered float64) Phase {
	var lat []time.Duration
	var ok, shed, timeouts, errs int
	for _, s := range ss {
		if s.at < from || s.at >= to {
			continue
		}
		switch s.status {
		case http.StatusOK:
			ok++
			lat = append(lat, s.latency)
		case http.StatusServiceUnavailable:
			shed++
		case statusTimeout:
			timeouts++
		case statusError:
			errs++
		}
	}
	secs := (to - from).Seconds()
	p := Phase{Name: name, Offered: offered, Goodput: float64(ok) / secs, Shed: float64(shed) / secs, Timeouts: float64(timeouts) / secs, Errors: float64(errs) / secs}
	if len(lat) > 0 {
		slices.Sort(lat)
		p.P50, p.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return p
}

// Run performs the four phases and writes each result to log as it completes.
func Run(ctx context.Context, cfg Config, log io.Writer) (Report, error) {
	var rep Report
	plainURL, stopPlain, err := serve(backend(cfg))
	if err != nil {
		return rep, err
	}
	defer stopPlain()
	nominal := float64(cfg.Workers) / cfg.Service.Seconds()

	// 1. Unloaded: a quarter of nominal capacity.
	ss := openLoop(ctx, cfg, plainURL, nominal/4, cfg.Phase)
	rep.Unloaded = summarize("unloaded (0.25×)", ss, 0, cfg.Phase, nominal/4)
	fmt.Fprintln(log, rep.Unloaded)

	// 2. Capacity: closed loop with four times the worker count in flight.
	ss = closedLoop(ctx, cfg, plainURL, 4*cfg.Workers, cfg.Phase)
	rep.Capacity = summarize("capacity (closed loop)", ss, 0, cfg.Phase, 0)
	fmt.Fprintln(log, rep.Capacity)
	offered := cfg.Overload * rep.Capacity.Goodput

	// 3. Overload with the adaptive shedder, on a fresh server. It runs before the unprotected
	// phase, which leaves thousands of abandoned connections behind (TIME_WAIT, queued handlers).
	shed, err := guard.NewShedder(guard.DefaultShedConfig())
	if err != nil {
		return rep, err
	}
	defer shed.Close()
	onURL, stopOn, err := serve(shed.Middleware(backend(cfg)))
	if err != nil {
		return rep, err
	}
	ss = openLoop(ctx, cfg, onURL, offered, cfg.Warmup+cfg.Phase)
	stopOn()
	rep.On = summarize(fmt.Sprintf("%.0f× shedding on", cfg.Overload), ss, cfg.Warmup, cfg.Warmup+cfg.Phase, offered)
	fmt.Fprintf(log, "%v (final limit %d)\n", rep.On, shed.Limit())

	// 4. Overload without shedding.
	offURL, stopOff, err := serve(backend(cfg))
	if err != nil {
		return rep, err
	}
	ss = openLoop(ctx, cfg, offURL, offered, cfg.Warmup+cfg.Phase)
	stopOff()
	rep.Off = summarize(fmt.Sprintf("%.0f× shedding off", cfg.Overload), ss, cfg.Warmup, cfg.Warmup+cfg.Phase, offered)
	fmt.Fprintln(log, rep.Off)
	return rep, ctx.Err()
}
