package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// h2load (nghttp2's HTTP/2 load generator, written in C) is the lighter gRPC load generator
// (-gen h2load): ghz spends more CPU per call than the servers it loads, so on a 2-core machine it
// saturates its core first. h2load POSTs a fixed gRPC frame to the method's path; it checks the
// HTTP status, not grpc-status (the echo method never fails), and reports the mean latency, no
// percentiles (the report's p50 column then shows the mean, p99 the slowest call).

// writeGRPCBody writes the gRPC frame h2load sends: a 5-byte prefix (not compressed, length) and
// the SimpleRequest ghz sends.
func writeGRPCBody(path string) error {
	b, err := proto.Marshal(&testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}})
	if err != nil {
		return err
	}
	f := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(f[1:5], uint32(len(b)))
	copy(f[5:], b)
	return os.WriteFile(path, f, 0o644)
}

// h2load runs h2load pinned to the load CPU against addr for d: -grpc-conns connections with -c
// streams in flight in all.
func (h *harness) h2load(ctx context.Context, addr string, d time.Duration) (wrkResult, error) {
	streams := max(1, h.f.conns/h.f.grpcConns)
	args := []string{"-c", h.f.loadCPU, "h2load", "-t", "1", "-c", strconv.Itoa(h.f.grpcConns), "-m", strconv.Itoa(streams),
		"-D", strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))), "-d", h.grpcBody,
		"-H", "content-type: application/grpc", "-H", "te: trailers",
		"http://" + addr + "/" + strings.Replace(ghzCall, ".UnaryCall", "/UnaryCall", 1)}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("h2load: %w\n%s", err, out)
	}
	r, err := parseH2load(string(out))
	if err != nil {
		return r, fmt.Errorf("%w\n%s", err, out)
	}
	r.genCPU = childCPU(cmd)
	return r, nil
}

// parseH2load reads h2load's summary:
//
//	finished in 3.00s, 30513.33 req/s, 1.54MB/s
//	requests: 91540 total, 91572 started, 91540 done, 91540 succeeded, 0 failed, 0 errored, 0 timeout
//	time for request:       92us    168.25ms       978us      4.99ms    99.69%
func parseH2load(out string) (wrkResult, error) {
	var r wrkResult
	var haveFin, haveReq, haveTime bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(strings.ReplaceAll(sc.Text(), ",", ""))
		switch {
		case len(f) >= 5 && f[0] == "finished" && f[1] == "in":
			d, err1 := time.ParseDuration(f[2])
			rps, err2 := strconv.ParseFloat(f[3], 64)
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("h2load: %q", sc.Text())
			}
			r.elapsed, r.rps, haveFin = d, rps, true
		case len(f) >= 11 && f[0] == "requests:":
			done, err1 := strconv.ParseInt(f[5], 10, 64)
			ok, err2 := strconv.ParseInt(f[7], 10, 64)
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("h2load: %q", sc.Text())
			}
			r.requests, r.errors, haveReq = done, done-ok, true
		case len(f) >= 6 && f[0] == "time" && f[2] == "request:":
			slowest, err1 := time.ParseDuration(f[4])
			mean, err2 := time.ParseDuration(f[5])
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("h2load: %q", sc.Text())
			}
			r.p50, r.p99, haveTime = mean, slowest, true
		}
	}
	if !haveFin || !haveReq || !haveTime || r.elapsed <= 0 {
		return r, fmt.Errorf("h2load: no summary in its output")
	}
	r.okRPS = float64(r.requests-r.errors) / r.elapsed.Seconds()
	return r, nil
}
