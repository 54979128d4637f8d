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
// function matching re. Categories overlap (the access log's write(2) is also a syscall), so the
// shares do not add up to 100%.
type category struct {
	name, re string
}

var categories = []category{
	{"socket reads and writes (net.netFD, syscall included)", `^net\.\(\*netFD\)\.(Read|Write)$`},
	{"all syscalls (Syscall6: sockets, log file, epoll)", `^internal/runtime/syscall/linux\.Syscall6$`},
	{"net/http: reading and parsing the request", `^net/http\.\(\*conn\)\.readRequest$`},
	{"handler: JSON encode of the body", `^encoding/json\.\(\*Encoder\)\.Encode$`},
	{"Chassis telemetry middleware, total (span, metrics, access log)", `^github\.com/cloudchassis/kit/telemetry\.\(\*serverHandler\)\.ServeHTTP$`},
	{"access log: encode and write a JSON line", `^github\.com/cloudchassis/kit/telemetry\.\(\*Telemetry\)\.logAccess$`},
	{"log file write(2)", `^os\.\(\*File\)\.Write$`},
	{"tracing: OTel SDK span start/end", `^go\.opentelemetry\.io/otel/sdk/trace\.`},
	{"metrics: OTel SDK instruments", `^go\.opentelemetry\.io/otel/sdk/metric\.`},
	{"request deadline (context.WithTimeout/WithDeadline)", `^context\.(WithTimeout|WithDeadline)`},
	{"load shedder", `Shedder`},
	{"outgoing call (http.Client.Do / ReverseProxy)", `^net/http\.\(\*Client\)\.Do$|^net/http/httputil\.\(\*ReverseProxy\)\.ServeHTTP$`},
	{"dialing new connections", `^net/http\.\(\*Transport\)\.dialConn$`},
	{"allocation (mallocgc)", `^runtime\.mallocgc$`},
	{"GC: background marking, assists, sweeping", `^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge)$`},
	{"scheduler and netpoll (idle included)", `^runtime\.(schedule|findRunnable|netpoll)$`},
}

var showing = regexp.MustCompile(`Showing nodes accounting for [^,]+, ([0-9.]+)% of`)

// breakdown returns a markdown table of categories (those with samples) for a CPU profile, with
// each share turned into µs per request by the CPU time per request measured beside it.
func breakdown(ctx context.Context, bin, prof string, cpuPerReq float64) (string, error) {
	var b strings.Builder
	b.WriteString("\n  | item (stacks containing) | share of CPU samples | ≈ µs/request |\n  |---|---:|---:|\n")
	for _, c := range categories {
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=1000000",
			"-focus="+c.re, bin, prof).Output()
		if err != nil {
			return "", fmt.Errorf("pprof -focus %s: %w", c.re, err)
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
