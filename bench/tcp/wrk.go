package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	requests int64
	elapsed  time.Duration
	rps      float64 // every completed request, as wrk counts them
	okRPS    float64 // 2xx and 3xx only, without socket errors
	p50, p99 time.Duration
	// genCPU is the load generator's own CPU time (user + system) over the whole run: near the run's
	// length, the generator saturated its core and req/s measures it rather than the server.
	genCPU time.Duration
	errors int64 // socket errors plus non-2xx/3xx responses
}

// wrk runs wrk pinned to the load CPU against url for d.
func (h *harness) wrk(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	// wrk's own timeout (default 2 s) counts slow replies as errors; a loaded machine can exceed it.
	args := []string{"-c", h.f.loadCPU, "wrk", "-t" + strconv.Itoa(h.f.threads), "-c" + strconv.Itoa(h.f.conns),
		"-d" + wrkDuration(d), "--timeout", "10s", "--latency", url}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("%w\n%s", err, out)
	}
	r.genCPU = childCPU(cmd)
	return r, nil
}

// wrkDuration renders d in whole seconds at least 1, as wrk wants ("10s").
func wrkDuration(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s"
}

// parseWrk reads the text wrk prints with --latency:
//
//	  Latency Distribution
//	     50%  1.20ms
//	     99%  4.31ms
//	  123456 requests in 10.00s, 17.43MB read
//	  Socket errors: connect 0, read 0, write 0, timeout 3
//	  Non-2xx or 3xx responses: 5
//	Requests/sec:  12345.60
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "50%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			r.p50, have50 = d, true
		case len(f) == 2 && f[0] == "99%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			r.p99, have99 = d, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: requests: %w", err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.requests, r.elapsed, haveReq = n, d, true
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: requests/sec: %w", err)
			}
			r.rps, haveRPS = v, true
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 0, write 0, timeout 3"
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: socket errors: %w", err)
				}
				r.errors += n
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: non-2xx: %w", err)
			}
			r.errors += n
		}
	}
	if r.elapsed > 0 {
		r.okRPS = float64(r.requests-r.errors) / r.elapsed.Seconds()
	}
	if !haveReq || !haveRPS || !have50 || !have99 {
		return r, fmt.Errorf("wrk: output without requests, Requests/sec or the 50%%/99%% latency lines")
	}
	return r, nil
}

// parseWrkDuration reads wrk's durations: "812.00us", "1.20ms", "2.01s", "1.00m".
func parseWrkDuration(s string) (time.Duration, error) {
	if strings.HasSuffix(s, "m") && !strings.HasSuffix(s, "ms") {
		s += "in" // wrk prints minutes as "m"; make it unambiguous for the switch below
	}
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"min", time.Minute}, {"s", time.Second}, {"h", time.Hour}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk: duration %q: %w", s, err)
			}
			return time.Duration(math.Round(f * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("wrk: duration %q: unknown unit", s)
}

// childCPU is the CPU time a finished command used (taskset execs the generator, so it is the
// generator's).
func childCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}
