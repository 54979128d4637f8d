package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudchassis/kit/internal/procstat"
)

// soakOptions are the flags of the soak mode (docs/demo.md, "Soak").
type soakOptions struct {
	on       bool
	report   string
	interval time.Duration
	warmup   time.Duration
}

func (s *soakOptions) flags(fs *flag.FlagSet) {
	fs.BoolVar(&s.on, "soak", false, "soak mode: sample every process's goroutines, RSS and open files and the Consul agent's blocking queries; fail on unbounded growth, a failed idempotent request or an unanswered chaos event (needs a real Consul: -consul=local or CONSUL_HTTP_ADDR)")
	fs.StringVar(&s.report, "soak-report", "", "with -soak, also write the report (Markdown) to this file")
	fs.DurationVar(&s.interval, "soak-every", 2*time.Second, "with -soak, the sampling interval")
	fs.DurationVar(&s.warmup, "soak-warmup", 0, "with -soak, samples before this are not judged (0: a sixth of -duration, at most 60s)")
}

// check validates the soak flags and fills in their defaults: a warm-up, and a chaos schedule that
// repeats every minute (or over the whole run, if shorter).
func (s *soakOptions) check(o *options) []error {
	if !s.on {
		return nil
	}
	var errs []error
	if o.duration <= 0 {
		errs = append(errs, errors.New("-soak needs a -duration (SOAK_DURATION in make soak)"))
	}
	if o.consul != "local" && os.Getenv("CONSUL_HTTP_ADDR") == "" {
		errs = append(errs, errors.New("-soak needs a real Consul agent: -consul=local, or CONSUL_HTTP_ADDR"))
	}
	if s.interval < 100*time.Millisecond {
		errs = append(errs, errors.New("-soak-every must be at least 100ms"))
	}
	if s.warmup == 0 {
		s.warmup = min(time.Minute, o.duration/6)
	}
	if o.duration > 0 && (s.warmup < 0 || s.warmup > o.duration/2) {
		errs = append(errs, errors.New("-soak-warmup must be between 0 and half of -duration"))
	}
	if o.duration > 0 && (o.duration-s.warmup)/s.interval < 3*minThird {
		errs = append(errs, fmt.Errorf("-soak: too few samples after the warm-up (want at least %d: a longer -duration or a shorter -soak-every)", 3*minThird))
	}
	if o.chaos && o.chaosEvery == 0 && o.duration > 0 {
		o.chaosEvery = max(10*time.Second, min(cycle, o.duration))
	}
	return errs
}

// Resources the soak samples. The agent's are Consul's own view: consul.rpc.queries_blocking (the
// blocking queries its server side holds open), consul.grpc.server.streams (the streaming
// subscriptions that serve health watches when use_streaming_backend is on, Consul's default
// since 1.10), consul.runtime.num_goroutines, and the TCP connections established to its HTTP port
// (every long poll a client holds is one of them).
const (
	resGoroutines = "goroutines"
	resRSS        = "rss_mib"
	resFDs        = "fds"
	resBlocking   = "blocking_queries"
	resStreams    = "streams"
	resConns      = "http_conns"
)

var soakResources = []string{resGoroutines, resRSS, resFDs, resBlocking, resStreams, resConns}

// agentGauges maps the agent's gauges to resources. go-metrics reports a gauge only in an interval
// in which it was set, so an absent one keeps its last value (0 before it was ever set).
var agentGauges = map[string]string{
	"consul.runtime.num_goroutines": resGoroutines,
	"consul.rpc.queries_blocking":   resBlocking,
	"consul.grpc.server.streams":    resStreams,
}

// bound is how far a resource may grow before the soak calls it unbounded: the median of the last
// third of the judged samples may exceed the median of the first third by rel (a fraction of it)
// plus abs, and no sample may exceed ceiling.
type bound struct{ rel, abs, ceiling float64 }

func soakBound(kind, res string) bound {
	b := map[string]bound{
		resGoroutines: {rel: 0.25, abs: 15, ceiling: 2000},
		resRSS:        {rel: 0.25, abs: 16, ceiling: 512},
		resFDs:        {rel: 0.25, abs: 10, ceiling: 1000},
		resBlocking:   {rel: 0.25, abs: 10, ceiling: 1000},
		resStreams:    {rel: 0.25, abs: 10, ceiling: 1000},
		resConns:      {rel: 0.25, abs: 10, ceiling: 1000},
	}[res]
	if kind == kindAgent { // Consul's own memory and goroutines are a few times a service's
		b.ceiling *= 4
	}
	return b
}

// Kinds of series.
const (
	kindInstance = "instance" // one process that lived through the whole judged window
	kindService  = "service"  // the median over a service's live instances at each sample
	kindLauncher = "launcher" // the load generator and chaos driver itself
	kindAgent    = "agent"    // the Consul agent
)

// minThird is the fewest samples a third of the judged window must hold.
const minThird = 3

type point struct{ t, v float64 }

type series struct {
	name, kind string
	pts        map[string][]point // by resource
}

func (s *series) add(t float64, res string, v float64) {
	if math.IsNaN(v) || v < 0 {
		return
	}
	s.pts[res] = append(s.pts[res], point{t, v})
}

// soak samples the cluster's processes and the agent while the load and the chaos run.
type soak struct {
	o     soakOptions
	cl    *cluster
	scr   *scraper
	start time.Time

	agentPid  int    // 0: an agent the launcher did not start
	agentAddr string // host:port of its HTTP API, not through the launcher's outage proxy
	http      *http.Client
	gauges    map[string]float64 // the agent's last reported gauges, by resource; sample's goroutine only

	mu     sync.Mutex
	series map[string]*series
	end    float64 // seconds of the last sample
}

func newSoak(o soakOptions, cl *cluster, reg registry, scr *scraper, start time.Time) *soak {
	s := &soak{o: o, cl: cl, scr: scr, start: start, series: map[string]*series{},
		http: &http.Client{Timeout: 2 * time.Second}, gauges: map[string]float64{}}
	if cr, ok := reg.(*consulRegistry); ok {
		s.agentAddr = cr.proxy.target
		if cr.agent != nil {
			s.agentPid = cr.agent.Process.Pid
		}
	}
	return s
}

func (s *soak) get(name, kind string) *series {
	sr := s.series[name]
	if sr == nil {
		sr = &series{name: name, kind: kind, pts: map[string][]point{}}
		s.series[name] = sr
	}
	return sr
}

// run samples every interval until ctx ends.
func (s *soak) run(ctx context.Context) {
	tick := time.NewTicker(s.o.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.sample(ctx)
		}
	}
}

// sample takes one reading of every live, ready instance, the launcher and the agent.
func (s *soak) sample(ctx context.Context) {
	t := time.Since(s.start).Seconds()
	perService := map[string]map[string][]float64{} // service -> resource -> values
	type reading struct {
		id, svc string
		v       map[string]float64
	}
	var rs []reading
	for _, p := range s.cl.live("") {
		in := p.snapshot()
		if in.State != StateReady || in.Pid == 0 {
			continue
		}
		m := s.scr.metrics(in.ID)
		gor := math.NaN()
		if m.ScrapeErr == "" && m.ScrapedAgo < 3 && m.Goroutines > 0 {
			gor = m.Goroutines
		}
		rs = append(rs, reading{in.ID, in.Service, map[string]float64{resGoroutines: gor, resRSS: rssMiB(in.Pid), resFDs: openFDs(in.Pid)}})
	}
	agent := map[string]float64{}
	if s.agentAddr != "" {
		agent = s.agentMetrics(ctx)
		agent[resConns] = establishedTo(s.agentAddr)
		if s.agentPid != 0 {
			agent[resRSS], agent[resFDs] = rssMiB(s.agentPid), openFDs(s.agentPid)
		}
	}
	self := os.Getpid()
	launcher := map[string]float64{resGoroutines: float64(runtime.NumGoroutine()), resRSS: rssMiB(self), resFDs: openFDs(self)}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.end = t
	for _, r := range rs {
		sr := s.get(r.id, kindInstance)
		if perService[r.svc] == nil {
			perService[r.svc] = map[string][]float64{}
		}
		for res, v := range r.v {
			sr.add(t, res, v)
			if !math.IsNaN(v) && v >= 0 {
				perService[r.svc][res] = append(perService[r.svc][res], v)
			}
		}
	}
	for svc, byRes := range perService {
		sr := s.get(svc+" (median of live instances)", kindService)
		for res, vs := range byRes {
			sr.add(t, res, median(vs))
		}
	}
	lr := s.get("launcher (load generator)", kindLauncher)
	for res, v := range launcher {
		lr.add(t, res, v)
	}
	if s.agentAddr != "" {
		ar := s.get("consul agent", kindAgent)
		for res, v := range agent {
			ar.add(t, res, v)
		}
	}
}

// agentMetrics reads the agent's goroutines, blocking queries and streams from /v1/agent/metrics
// (go-metrics' in-memory sink); nothing when the agent does not answer.
func (s *soak) agentMetrics(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.agentAddr+"/v1/agent/metrics", nil)
	if err != nil {
		return out
	}
	res, err := s.http.Do(req)
	if err != nil {
		return out
	}
	defer res.Body.Close()
	var doc struct {
		Gauges []struct {
			Name  string
			Value float64
		}
	}
	if res.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(res.Body, 8<<20)).Decode(&doc) != nil {
		return out
	}
	for _, g := range doc.Gauges {
		if res, ok := agentGauges[g.Name]; ok {
			s.gauges[res] = g.Value
		}
	}
	for _, res := range agentGauges {
		out[res] = s.gauges[res]
	}
	return out
}

// rssMiB is a process's resident set in MiB; NaN when it cannot be read.
func rssMiB(pid int) float64 {
	b, err := procstat.RSS(pid)
	if err != nil {
		return math.NaN()
	}
	return roundTo(float64(b)/(1<<20), 0.1)
}

// openFDs is how many files a process has open; NaN when it cannot be read.
func openFDs(pid int) float64 {
	n, err := procstat.FDs(pid)
	if err != nil {
		return math.NaN()
	}
	return float64(n)
}

// establishedTo counts the TCP connections established to addr's port: the connections the agent
// at addr holds open to its clients. NaN when it cannot tell.
func establishedTo(addr string) float64 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return math.NaN()
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return math.NaN()
	}
	n, err := procstat.Established(port)
	if err != nil {
		return math.NaN()
	}
	return float64(n)
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SoakCheck is the verdict on one resource of one series.
type SoakCheck struct {
	Series   string  `json:"series"`
	Kind     string  `json:"kind"`
	Resource string  `json:"resource"`
	Samples  int     `json:"samples"` // judged: after the warm-up
	Start    float64 `json:"start"`   // the first judged sample
	End      float64 `json:"end"`     // the last sample
	First    float64 `json:"first_third_median"`
	Last     float64 `json:"last_third_median"`
	Max      float64 `json:"max"`
	Bound    float64 `json:"bound"` // the last third's median may be at most this
	Ceiling  float64 `json:"ceiling"`
	OK       bool    `json:"ok"`
	Why      string  `json:"why,omitempty"`
}

// judge applies the trend test to the points after the warm-up: the median of the last third
// against the median of the first third, within b, and every point under b's ceiling.
func judge(pts []point, warmup float64, b bound) (SoakCheck, bool) {
	var vs []float64
	for _, p := range pts {
		if p.t >= warmup {
			vs = append(vs, p.v)
		}
	}
	k := len(vs) / 3
	if k < minThird {
		return SoakCheck{}, false
	}
	c := SoakCheck{Samples: len(vs), Start: vs[0], End: vs[len(vs)-1], First: median(vs[:k]), Last: median(vs[len(vs)-k:]),
		Max: slices.Max(vs), Ceiling: b.ceiling, OK: true}
	c.Bound = roundTo(c.First*(1+b.rel)+b.abs, 0.1)
	switch {
	case c.Max > b.ceiling:
		c.OK, c.Why = false, fmt.Sprintf("reached %.0f, over the ceiling of %.0f", c.Max, b.ceiling)
	case c.Last > c.Bound:
		c.OK, c.Why = false, fmt.Sprintf("grew: median %.1f in the last third against %.1f in the first (bound %.1f)", c.Last, c.First, c.Bound)
	}
	return c, true
}

// SoakReport is the soak's outcome; it is also the "soak" member of -summary-json.
type SoakReport struct {
	Duration         float64      `json:"duration_s"`
	Warmup           float64      `json:"warmup_s"`
	Interval         float64      `json:"interval_s"`
	Checks           []SoakCheck  `json:"checks"`
	Requests         int          `json:"requests"`
	Idempotent       int          `json:"idempotent"`
	IdempotentFailed int          `json:"idempotent_failed"`
	ChaosEvents      int          `json:"chaos_events"`
	Unanswered       []string     `json:"unanswered,omitempty"`
	Problems         []string     `json:"problems,omitempty"`
	OK               bool         `json:"ok"`
	Series           []SoakSeries `json:"series"` // every sample, for plots and for a failure's diagnosis
}

// SoakSeries is every sample of one resource of one series: [seconds since the load started, value].
type SoakSeries struct {
	Series   string       `json:"series"`
	Kind     string       `json:"kind"`
	Resource string       `json:"resource"`
	Points   [][2]float64 `json:"points"`
}

// report judges every series and the run's summary.
func (s *soak) report(sum Summary) SoakReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	warm := s.o.warmup.Seconds()
	r := SoakReport{Duration: roundTo(s.end, 0.1), Warmup: warm, Interval: s.o.interval.Seconds(),
		Requests: sum.Totals.Requests, Idempotent: sum.Totals.Idempotent, IdempotentFailed: sum.Totals.Idempotent - sum.Totals.IdempotentOK}
	names := make([]string, 0, len(s.series))
	for n := range s.series {
		names = append(names, n)
	}
	order := map[string]int{kindAgent: 0, kindLauncher: 1, kindService: 2, kindInstance: 3}
	sort.Slice(names, func(i, j int) bool {
		a, b := s.series[names[i]], s.series[names[j]]
		if order[a.kind] != order[b.kind] {
			return order[a.kind] < order[b.kind]
		}
		return a.name < b.name
	})
	slack := 3 * s.o.interval.Seconds()
	for _, n := range names {
		sr := s.series[n]
		for _, res := range soakResources {
			pts := sr.pts[res]
			if len(pts) > 0 {
				ss := SoakSeries{Series: sr.name, Kind: sr.kind, Resource: res}
				for _, p := range pts {
					ss.Points = append(ss.Points, [2]float64{roundTo(p.t, 0.1), p.v})
				}
				r.Series = append(r.Series, ss)
			}
			// One process is judged on its own only if it lived through the whole judged window;
			// a replaced one counts in its service's median.
			if sr.kind == kindInstance && (len(pts) == 0 || pts[0].t > warm+slack || pts[len(pts)-1].t < s.end-slack) {
				continue
			}
			c, ok := judge(pts, warm, soakBound(sr.kind, res))
			if !ok {
				continue
			}
			c.Series, c.Kind, c.Resource = sr.name, sr.kind, res
			r.Checks = append(r.Checks, c)
			if !c.OK {
				r.Problems = append(r.Problems, fmt.Sprintf("%s %s %s", sr.name, res, c.Why))
			}
		}
	}
	for _, want := range []string{kindAgent, kindLauncher, kindService} {
		if !slices.ContainsFunc(r.Checks, func(c SoakCheck) bool { return c.Kind == want }) {
			r.Problems = append(r.Problems, "no judged series of kind "+want+" (too few samples?)")
		}
	}
	if r.IdempotentFailed > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d idempotent requests failed", r.IdempotentFailed))
	}
	for _, e := range sum.Events {
		if !e.Chaos {
			continue
		}
		r.ChaosEvents++
		if !e.Done || e.Reaction == "" {
			r.Unanswered = append(r.Unanswered, fmt.Sprintf("%s %s at %.1fs", e.Kind, e.Target, e.Offset))
		}
	}
	if r.ChaosEvents == 0 && sum.Chaos {
		r.Problems = append(r.Problems, "no chaos event happened")
	}
	if len(r.Unanswered) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d chaos events unanswered: %s", len(r.Unanswered), strings.Join(r.Unanswered, ", ")))
	}
	r.OK = len(r.Problems) == 0
	return r
}

// finishSoak prints the report, writes it to -soak-report, and fails the run if the soak failed.
func (d *demo) finishSoak(r SoakReport) error {
	var b strings.Builder
	writeSoakReport(&b, r)
	d.printf("\n%s", b.String())
	if d.o.soak.report != "" {
		if err := os.WriteFile(d.o.soak.report, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	if !r.OK {
		return fmt.Errorf("soak failed: %s", strings.Join(r.Problems, "; "))
	}
	return nil
}

// writeSoakReport writes the report as Markdown: one row per series, start → end of each resource
// (first judged sample, last sample), and the verdict.
func writeSoakReport(w io.Writer, r SoakReport) {
	verdict := "PASS"
	if !r.OK {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "## Soak: %s (%.0fs, warm-up %.0fs, a sample every %.0fs)\n\n", verdict, r.Duration, r.Warmup, r.Interval)
	fmt.Fprintf(w, "requests %d; idempotent %d, of which failed %d; chaos events %d, unanswered %d\n\n",
		r.Requests, r.Idempotent, r.IdempotentFailed, r.ChaosEvents, len(r.Unanswered))
	fmt.Fprintf(w, "Start → end (first sample after the warm-up → last sample); in brackets the medians of the first and last third, which the trend test compares.\n\n")
	fmt.Fprintf(w, "| process | goroutines | RSS MiB | open FDs | blocking queries | streams | HTTP conns | verdict |\n|---|---|---|---|---|---|---|---|\n")
	var rows []string
	cells := map[string]map[string]string{}
	verdicts := map[string][]string{}
	for _, c := range r.Checks {
		if cells[c.Series] == nil {
			cells[c.Series] = map[string]string{}
			rows = append(rows, c.Series)
		}
		cells[c.Series][c.Resource] = fmt.Sprintf("%s → %s (%s → %s)", fmtNum(c.Start), fmtNum(c.End), fmtNum(c.First), fmtNum(c.Last))
		if !c.OK {
			verdicts[c.Series] = append(verdicts[c.Series], c.Resource+" "+c.Why)
		}
	}
	for _, s := range rows {
		v := "ok"
		if len(verdicts[s]) > 0 {
			v = strings.Join(verdicts[s], "; ")
		}
		fmt.Fprintf(w, "| %s |", s)
		for _, res := range soakResources {
			cell := cells[s][res]
			if cell == "" {
				cell = "–"
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintf(w, " %s |\n", v)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nproblems:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "- %s\n", p)
		}
	}
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
