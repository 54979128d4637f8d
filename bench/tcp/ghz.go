package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The gRPC configurations are loaded by ghz (github.com/bojand/ghz), a load generator no one here
// wrote, calling grpc.testing.TestService/UnaryCall with a 5-byte payload. ghz reads the method's
// schema from a protoset the harness writes from the descriptors compiled into grpc-go, so no
// server needs reflection.
const (
	ghzCall = "grpc.testing.TestService.UnaryCall"
	ghzData = `{"payload":{"body":"aGVsbG8="}}` // "hello"
)

// ghzPath finds ghz on PATH or in $GOBIN / $GOPATH/bin (where go install puts it).
func ghzPath() (string, error) {
	if p, err := exec.LookPath("ghz"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err == nil {
		var dirs []string
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" {
				dirs = append(dirs, l, filepath.Join(l, "bin"))
			}
		}
		for _, d := range dirs {
			if p := filepath.Join(d, "ghz"); isFile(p) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("ghz not found: go install github.com/bojand/ghz/cmd/ghz@latest (v0.93.0 measured), or put it on PATH")
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// moduleVersion is the main module version Go recorded in bin ("?" if unknown).
func moduleVersion(bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
			return f[2]
		}
	}
	return "?"
}

// writeProtoset writes the FileDescriptorSet of grpc/testing/test.proto and its imports to path.
func writeProtoset(path string) error {
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imps := fd.Imports()
		for i := range imps.Len() {
			add(imps.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd)) // imports first
	}
	add(testgrpc.File_grpc_testing_test_proto)
	b, err := proto.Marshal(&set)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ghz runs ghz pinned to the load CPU against the gRPC address addr for d: -c workers (the -c
// flag) over -grpc-conns connections, stopped at d ignoring calls in flight, JSON report.
func (h *harness) ghz(ctx context.Context, addr string, d time.Duration) (wrkResult, error) {
	args := []string{"-c", h.f.loadCPU, h.ghzBin, "--insecure", "--protoset", h.protoset, "--call", ghzCall,
		"-d", ghzData, "-c", strconv.Itoa(h.f.conns), "--connections", strconv.Itoa(h.f.grpcConns),
		"-z", d.String(), "--duration-stop", "ignore", "-t", "10s", "-O", "json", addr}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", args...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return wrkResult{}, fmt.Errorf("ghz: %w\n%s%s", err, stderr, out)
	}
	r, err := parseGhz(out)
	if err != nil {
		return r, fmt.Errorf("%w\n%.2000s", err, out)
	}
	r.genCPU = childCPU(cmd)
	return r, nil
}

// ghzReport is the part of ghz's JSON report (-O json) the harness reads. Durations are in
// nanoseconds.
type ghzReport struct {
	Count               int64            `json:"count"`
	Total               int64            `json:"total"`
	RPS                 float64          `json:"rps"`
	StatusCodes         map[string]int64 `json:"statusCodeDistribution"`
	LatencyDistribution []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
}

// parseGhz maps ghz's JSON report to the harness's result: requests is every completed call,
// okRPS counts calls that ended OK, errors every other status.
func parseGhz(b []byte) (wrkResult, error) {
	var g ghzReport
	if err := json.Unmarshal(b, &g); err != nil {
		return wrkResult{}, fmt.Errorf("ghz report: %w", err)
	}
	if g.Count == 0 || g.Total <= 0 {
		return wrkResult{}, fmt.Errorf("ghz report: no calls")
	}
	r := wrkResult{requests: g.Count, elapsed: time.Duration(g.Total), rps: g.RPS}
	ok := g.StatusCodes["OK"]
	r.errors = g.Count - ok
	r.okRPS = float64(ok) / r.elapsed.Seconds()
	var have50, have99 bool
	for _, l := range g.LatencyDistribution {
		switch l.Percentage {
		case 50:
			r.p50, have50 = time.Duration(l.Latency), true
		case 99:
			r.p99, have99 = time.Duration(l.Latency), true
		}
	}
	if !have50 || !have99 {
		return r, fmt.Errorf("ghz report: no 50th or 99th percentile")
	}
	return r, nil
}
