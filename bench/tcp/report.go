package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// report gathers the samples of every round and renders them as markdown.
type report struct {
	f            flags
	started      time.Time
	load0, load1 string
	single, two  []target
	samples      map[string][]sample // by configuration, in round order
	rounds       []map[string]sample // by round, then configuration
	otlpRequests int64
	otlpBytes    int64
	ghzVersion   string
}

func (r *report) add(round int, name string, s sample) {
	for len(r.rounds) <= round {
		r.rounds = append(r.rounds, map[string]sample{})
	}
	r.rounds[round][name] = s
	r.samples[name] = append(r.samples[name], s)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// med is the median of f over the samples of one configuration.
func (r *report) med(name string, f func(sample) float64) float64 {
	var xs []float64
	for _, s := range r.samples[name] {
		xs = append(xs, f(s))
	}
	return median(xs)
}

// ratio is the median over rounds of f(name) / f(base) within each round; 0 when not computable.
func (r *report) ratio(name, base string, f func(sample) float64) float64 {
	var xs []float64
	for _, round := range r.rounds {
		s, ok1 := round[name]
		b, ok2 := round[base]
		if ok1 && ok2 && f(b) != 0 {
			xs = append(xs, f(s)/f(b))
		}
	}
	return median(xs)
}

func baseOf(ts []target) string {
	for _, t := range ts {
		if t.base {
			return t.name
		}
	}
	return ""
}

var (
	rps       = func(s sample) float64 { return s.wrk.okRPS }
	cpuReq    = func(s sample) float64 { return s.cpuPerReq() }
	p50       = func(s sample) float64 { return float64(s.wrk.p50) }
	p99       = func(s sample) float64 { return float64(s.wrk.p99) }
	idleRSS   = func(s sample) float64 { return float64(s.idleRSS) }
	loadedRSS = func(s sample) float64 { return float64(s.loadedRSS) }
	peakRSS   = func(s sample) float64 { return float64(s.peakRSS) }
	errCount  = func(s sample) float64 { return float64(s.wrk.errors) }
	beCPUReq  = func(s sample) float64 { return s.backendCPUPerReq() }
	totalCPU  = func(s sample) float64 { return s.cpuPerReq() + s.backendCPUPerReq() }
	connsReq  = func(s sample) float64 {
		if s.wrk.requests == 0 {
			return 0
		}
		return float64(s.backendConns) / float64(s.wrk.requests)
	}
)

func (r *report) markdown() string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "\n### TCP run %s\n\n", r.started.Format("2006-01-02 15:04 MST"))
	gen := fmt.Sprintf("`wrk -t%d -c%d -d%s --latency`", r.f.threads, r.f.conns, wrkDuration(r.f.duration))
	what := "req/s counts successful responses only (wrk's total less non-2xx/3xx and socket errors, which the errors column counts)"
	if r.f.grpc {
		gen = fmt.Sprintf("`ghz --insecure --call %s -c %d --connections %d -z %s` (ghz %s)", ghzCall, r.f.conns, r.f.grpcConns, r.f.duration, r.ghzVersion)
		what = "req/s counts calls that ended OK only (others are in the errors column)"
		if r.f.gen == "h2load" {
			gen = fmt.Sprintf("`h2load -t1 -c%d -m%d -D%s` POSTing one gRPC frame to /grpc.testing.TestService/UnaryCall", r.f.grpcConns, max(1, r.f.conns/r.f.grpcConns), wrkDuration(r.f.duration))
			what = "req/s counts HTTP 200 responses (h2load does not read grpc-status; the echo method never fails); h2load reports no percentiles, so the p50 column is the mean and p99 the slowest call"
		}
	}
	fmt.Fprintf(&b, "Host %s, %d CPUs online; servers on CPU %s (GOMAXPROCS follows the affinity), load generator on CPU %s: "+
		"%s, %s warm-up, %d interleaved rounds, medians. Load average %s at the start, %s at the end. "+
		"OTLP receiver: %d requests, %d bytes. %s; CPU per request divides by every completed request.\n",
		host, numCPU(), r.f.serverCPU, r.f.loadCPU, gen, r.f.warmup, r.f.rounds,
		r.load0, r.load1, r.otlpRequests, r.otlpBytes, what)
	if len(r.single) > 0 {
		base := baseOf(r.single)
		fmt.Fprintf(&b, "\nOne hop; ratios to `%s` of the same round (medians of the per-round ratios).\n\n", base)
		b.WriteString("| config | req/s | × bare | p50 | p99 | CPU µs/req | × bare | idle RSS | loaded RSS | peak RSS | errors |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, t := range r.single {
			n := t.name
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %.1f | %s | %s | %s | %s | %.0f |\n", n,
				r.med(n, rps), ratioText(r.ratio(n, base, rps)), dur(r.med(n, p50)), dur(r.med(n, p99)),
				r.med(n, cpuReq), ratioText(r.ratio(n, base, cpuReq)),
				mib(r.med(n, idleRSS)), mib(r.med(n, loadedRSS)), mib(r.med(n, peakRSS)), r.med(n, errCount))
		}
		b.WriteString("\n")
		for _, t := range r.single {
			fmt.Fprintf(&b, "- `%s`: %s\n", t.name, t.about)
		}
	}
	if len(r.two) > 0 {
		base := baseOf(r.two)
		fmt.Fprintf(&b, "\nTwo hops (gateway → bare backend, both on CPU %s); ratios to `%s` of the same round. "+
			"CPU columns are µs per request of the gateway, the backend and both; \"conns/1k\" is new TCP connections "+
			"the backend accepted per 1,000 requests.\n\n", r.f.serverCPU, base)
		b.WriteString("| config | req/s | × proxy | p50 | p99 | gateway CPU | backend CPU | total CPU | × proxy | conns/1k | gateway idle / loaded RSS | errors |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, t := range r.two {
			n := t.name
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %.1f | %.1f | %.1f | %s | %.1f | %s / %s | %.0f |\n", n,
				r.med(n, rps), ratioText(r.ratio(n, base, rps)), dur(r.med(n, p50)), dur(r.med(n, p99)),
				r.med(n, cpuReq), r.med(n, beCPUReq), r.med(n, totalCPU), ratioText(r.ratio(n, base, totalCPU)),
				1000*r.med(n, connsReq), mib(r.med(n, idleRSS)), mib(r.med(n, loadedRSS)), r.med(n, errCount))
		}
		b.WriteString("\n")
		for _, t := range r.two {
			fmt.Fprintf(&b, "- `%s`: %s\n", t.name, t.about)
		}
	}
	b.WriteString("\nPer round (req/s; server core busy / load generator busy, as shares of one core; load average at the end of each run). " +
		"A generator near 100% busy means req/s measured the generator, not the server: compare CPU per request then.\n\n")
	for i, round := range r.rounds {
		fmt.Fprintf(&b, "- round %d:", i+1)
		for _, t := range append(append([]target{}, r.single...), r.two...) {
			if s, ok := round[t.name]; ok {
				fmt.Fprintf(&b, " %s %.0f (%.0f%% / %.0f%%; %s);", t.name, s.wrk.okRPS, 100*s.serverBusy(), 100*s.genBusy(), s.loadEnd)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func ratioText(x float64) string {
	if x == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", x)
}

func dur(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
