package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// category is one line of the "where the time goes" breakdown: the CPU samples whose stack holds a
// function matching focus and none matching ignore (pprof's -focus and -ignore). A middleware's own
// cost is its frame with the next layer's frame ignored. Categories overlap (the access log's
// write(2) is also a syscall), so the shares do not add up to 100%.
type category struct {
	name, focus, ignore string
}

var categories = []category{
	{name: "socket reads and writes (net.netFD, syscall included)", focus: `^net\.\(\*netFD\)\.(Read|Write)$`},
	{name: "all syscalls (Syscall6: sockets, log file, epoll)", focus: `^internal/runtime/syscall/linux\.Syscall6$`},
	{name: "net/http: reading and parsing the request", focus: `^net/http\.\(\*conn\)\.readRequest$`},
	{name: "net/http: finishing the response (flush, chunked writer)", focus: `^net/http\.\(\*response\)\.finishRequest$`},
	{name: "the route's handler (JSON encode; gateways: the outgoing call)", focus: `^main\.|^github\.com/cloudchassis/kit/bench/internal/hello\.Handle$`},
	{name: "Chassis telemetry middleware, own: span, RED metrics, access log", focus: `^github\.com/cloudchassis/kit/telemetry\.\(\*serverHandler\)\.ServeHTTP$`,
		ignore: `^github\.com/cloudchassis/kit/chassis\.\(\*Service\)\.core\.func1$`},
	{name: "  access log: encode and write a JSON line", focus: `^github\.com/cloudchassis/kit/telemetry\.\(\*Telemetry\)\.logAccess$`},
	{name: "  log file write(2)", focus: `^os\.\(\*File\)\.Write$`},
	{name: "  tracing: OTel SDK span start/end", focus: `^go\.opentelemetry\.io/otel/sdk/trace\.`},
	{name: "  metrics: OTel SDK instruments", focus: `^go\.opentelemetry\.io/otel/sdk/metric\.`},
	{name: "Chassis core middleware, own: recovery, request id, body limit, deadline", focus: `^github\.com/cloudchassis/kit/chassis\.\(\*Service\)\.core\.func1$`,
		ignore: `Shedder\)\.Middleware`},
	{name: "  deadlines (context.WithTimeout: the request's; a gateway's calls add theirs)", focus: `^context\.(WithTimeout|WithDeadline)`},
	{name: "Chassis load shedder, own", focus: `Shedder\)\.Middleware`, ignore: `^main\.`},
	{name: "outgoing call (http.Client.Do / ReverseProxy)", focus: `^net/http\.\(\*Client\)\.Do$|^net/http/httputil\.\(\*ReverseProxy\)\.ServeHTTP$`},
	{name: "dialing new connections (the transport dials on its own goroutine)", focus: `^net/http\.\(\*Transport\)\.dialConn$`},
	{name: "allocation (mallocgc)", focus: `^runtime\.mallocgc$`},
	{name: "GC: background marking, assists, sweeping", focus: `^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge)$`},
	{name: "scheduler and netpoll (idle included)", focus: `^runtime\.(schedule|findRunnable|netpoll)$`},
}

var showing = regexp.MustCompile(`Showing nodes accounting for [^,]+, ([0-9.]+)% of`)

// breakdown returns a markdown table of categories (those with samples) for a CPU profile, with
// each share turned into µs per request by the CPU time per request measured beside it.
func breakdown(ctx context.Context, bin, prof string, cpuPerReq float64) (string, error) {
	var b strings.Builder
	b.WriteString("\n  | item (stacks containing) | share of CPU samples | ≈ µs/request |\n  |---|---:|---:|\n")
	for _, c := range categories {
		args := []string{"tool", "pprof", "-top", "-nodecount=1000000", "-focus=" + c.focus}
		if c.ignore != "" {
			args = append(args, "-ignore="+c.ignore)
		}
		out, err := exec.CommandContext(ctx, "go", append(args, bin, prof)...).Output()
		if err != nil {
			return "", fmt.Errorf("pprof -focus %s: %w", c.focus, err)
		}
		m := showing.FindSubmatch(out)
		if m == nil {
			continue // no sample matched: pprof prints no "Showing" line
		}
		pct, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil || pct == 0 {
			continue
		}
		fmt.Fprintf(&b, "  | %s | %.1f%% | %.1f |\n", c.name, pct, pct/100*cpuPerReq)
	}
	return b.String(), nil
}

var totalLine = regexp.MustCompile(`of ([0-9.]+)([kMG]?B?) total`)

// profileTotal reads the total of a pprof -top text ("... of 112.46MB total", "... of 937743 total").
func profileTotal(text string) (float64, bool) {
	m := totalLine.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	switch m[2] {
	case "kB":
		v *= 1 << 10
	case "MB":
		v *= 1 << 20
	case "GB":
		v *= 1 << 30
	}
	return v, true
}
