package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cloudchassis/kit/cmd/chassis/templates/greeterpb"
	"github.com/cloudchassis/kit/internal/syncbuf"
)

// TestGeneratedProjectBuildsTestsAndRuns is the generator's end-to-end check: generate a service
// that uses this checkout (-chassis-replace, through go.work), build it, run its own tests, start it,
// see /readyz answer 200, stop it with SIGTERM and see exit code 0. Then build and test it as CI and
// the Dockerfile do, without go.work (see ciAndImage). Every dependency comes from the module cache.
// Two projects, one after the other so that the second reuses the first's builds: one with an HTTP
// dependency, and a -grpc one, whose running binary also answers a gRPC call and grpc.health.v1.
func TestGeneratedProjectBuildsTestsAndRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a generated project (about a minute); skipped with -short")
	}
	for _, tc := range []struct {
		name string
		args []string // chassis new flags
		env  []string // to run the binary
	}{
		{"deps", []string{"-deps", "pricing"}, []string{"DISCOVERY=static", "DISCOVERY_STATIC_PRICING=127.0.0.1:1"}},
		{"grpc", []string{"-grpc"}, []string{"GRPC_PORT=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) { buildTestAndRun(t, tc.args, tc.env) })
	}
}

func buildTestAndRun(t *testing.T, args, runEnv []string) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "orders")
	// e2eVersion, not the checkout's own pseudo-version, because ciAndImage publishes this checkout
	// under it in the shared module cache: it must be a version no one can publish.
	newArgs := append(append([]string{"new", "-chassis-replace", root, "-chassis-version", e2eVersion}, args...), "example.com/acme/orders", dir)
	code, _, errOut := cli(newArgs...)
	if code != 0 {
		t.Fatalf("chassis new: exit %d: %s", code, errOut)
	}
	grpcAPI := slices.Contains(args, "-grpc")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "orders")
	gocmd := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		// The generated go.work finds the checkout; nothing is fetched (no go mod tidy needed).
		cmd.Env = append(os.Environ(), "GOWORK=", "GOPROXY=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	gocmd("build", "-o", bin, ".")
	gocmd("vet", "./...")
	gocmd("test", "-count=1", "./...")

	// Run it as production would, with ephemeral ports.
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(append(os.Environ(), "PORT=0", "ADMIN_PORT=0", "HOST=127.0.0.1", "DRAIN_DELAY=0s", "SHUTDOWN_TIMEOUT=10s"), runEnv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var logs syncbuf.Buffer
	type readyLine struct {
		Msg       string `json:"msg"`
		AdminAddr string `json:"admin_addr"`
		GRPCAddr  string `json:"grpc_addr"`
	}
	ready := make(chan readyLine, 1)
	go func() {
		// Read the JSON log lines until the "ready" one, which names the admin and gRPC addresses.
		sc := bufio.NewScanner(io.TeeReader(stdout, &logs))
		for sc.Scan() {
			var line readyLine
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "ready" {
				ready <- line
				break
			}
		}
		_, _ = io.Copy(&logs, stdout) // keep draining so the service never blocks on its log
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	var up readyLine
	select {
	case up = <-ready:
	case err := <-exited:
		stopped = true
		t.Fatalf("exited before ready: %v\n%s%s", err, logs.String(), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no ready line within 30s:\n%s%s", logs.String(), stderr.String())
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	res, err := client.Get("http://" + up.AdminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d", res.StatusCode)
	}
	client.CloseIdleConnections()
	if grpcAPI {
		callGRPC(ctx, t, up.GRPCAddr)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0\n%s%s", err, logs.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGTERM")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no stopped line:\n%s", logs.String())
	}

	ciAndImage(ctx, t, root, dir)
}

// callGRPC calls the -grpc project's API and health service on the running binary, with the
// generated client the project commits (the same code as templates/greeterpb).
func callGRPC(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	if addr == "" {
		t.Fatal("the ready line names no grpc_addr")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.SayHelloRequest{Name: "gopher"})
	if err != nil || res.GetMessage() != "Hello, gopher!" {
		t.Errorf("SayHello: %q %v", res.GetMessage(), err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: greeterpb.Greeter_ServiceDesc.ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v, want SERVING", h.GetStatus(), err)
	}
}
