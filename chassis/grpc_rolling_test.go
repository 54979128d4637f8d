package chassis_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/internal/syncbuf"
)

// buildRolling builds testdata/rolling (a service serving rollingtest.Rolling over gRPC) once per
// test binary.
var buildRolling = buildTestdata("rolling")

// The methods of testdata/rolling: Get is idempotent by its proto (registerRollingProto), Put is
// not, so the client never sends a Put twice.
const (
	rollingGet = "/rollingtest.Rolling/Get"
	rollingPut = "/rollingtest.Rolling/Put"
)

// rollingWork is how long each call works on the instance: calls are in progress on every
// instance when it drains or dies.
const rollingWork = 10 * time.Millisecond

// registerRollingProto registers in this process the descriptor that generated code for
// testdata/rolling's API would register, the client's only source of idempotency here:
//
//	service Rolling {
//	  rpc Get(google.protobuf.Duration) returns (google.protobuf.StringValue) {
//	    option idempotency_level = IDEMPOTENT;
//	  }
//	  rpc Put(google.protobuf.Duration) returns (google.protobuf.StringValue);
//	}
func registerRollingProto(t *testing.T) {
	t.Helper()
	if _, err := protoregistry.GlobalFiles.FindDescriptorByName("rollingtest.Rolling"); err == nil {
		return
	}
	rpc := func(name string, level *descriptorpb.MethodOptions_IdempotencyLevel) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name),
			InputType: proto.String(".google.protobuf.Duration"), OutputType: proto.String(".google.protobuf.StringValue"),
			Options: &descriptorpb.MethodOptions{IdempotencyLevel: level}}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("rollingtest/rolling.proto"), Package: proto.String("rollingtest"), Syntax: proto.String("proto3"),
		Dependency: []string{durationpb.File_google_protobuf_duration_proto.Path(), wrapperspb.File_google_protobuf_wrappers_proto.Path()},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Rolling"), Method: []*descriptorpb.MethodDescriptorProto{
			rpc("Get", descriptorpb.MethodOptions_IDEMPOTENT.Enum()), rpc("Put", nil)}}},
	}, protoregistry.GlobalFiles)
	if err == nil {
		err = protoregistry.GlobalFiles.RegisterFile(fd)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// rollingInstance is a running testdata/rolling process, registered in the registry.
type rollingInstance struct {
	cmd      *exec.Cmd
	grpcAddr string // its gRPC server's address, which its answers carry
	port     string // its gRPC port, registered as its grpc_port meta
	id       string // its registered id, the id the client's attempts name
	logs     *syncbuf.Buffer
	exited   chan struct{}
	exitErr  error
}

// rollingRegistry is where the instances register and the caller finds them: Consul or etcd.
type rollingRegistry struct {
	name string
	// env selects the registry, for the instances and the caller.
	env []string
	// idOf returns the id of the listed (passing) instance whose grpc_port meta is port, "" if none.
	idOf func(port string) (string, error)
	// count returns how many instances are listed (passing).
	count func() (int, error)
}

// consulRegistry starts a Consul dev agent.
func consulRegistry(t *testing.T) rollingRegistry {
	agent := consultest.StartDev(t)
	passing := func() ([]*api.ServiceEntry, error) {
		entries, _, err := agent.Client.Health().Service("rolling", "", true, nil)
		return entries, err
	}
	return rollingRegistry{
		name: "consul",
		env:  []string{"DISCOVERY=consul", "CONSUL_HTTP_ADDR=" + agent.HTTPAddr},
		idOf: func(port string) (string, error) {
			entries, err := passing()
			for _, e := range entries {
				if e.Service.Meta[chassis.MetaGRPCPort] == port {
					return e.Service.ID, nil
				}
			}
			return "", err
		},
		count: func() (int, error) { entries, err := passing(); return len(entries), err },
	}
}

// rollingCluster is a registry, the instances of "rolling" registered in it, and a caller
// chassis.Service whose GRPCClient("rolling") finds them there, with default settings.
type rollingCluster struct {
	reg      rollingRegistry
	bin      string
	conn     *grpc.ClientConn
	attempts *attemptLog
}

// startRollingCluster starts a registry (Consul unless given), n instances and the caller, all
// stopped when the test ends.
func startRollingCluster(t *testing.T, n int, registry ...func(*testing.T) rollingRegistry) (*rollingCluster, []*rollingInstance) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a registry and several processes")
	}
	registerRollingProto(t)
	bin, err := buildRolling()
	if err != nil {
		t.Fatal(err)
	}
	newRegistry := consulRegistry
	if len(registry) > 0 {
		newRegistry = registry[0]
	}
	c := &rollingCluster{reg: newRegistry(t), bin: bin, attempts: &attemptLog{by: map[string]*attemptStats{}}}
	var insts []*rollingInstance
	for range n {
		insts = append(insts, c.start(t))
	}
	callerEnv := []string{"REGISTER", "false"}
	for _, kv := range c.reg.env {
		k, v, _ := strings.Cut(kv, "=")
		callerEnv = append(callerEnv, k, v)
	}
	caller, err := chassis.New("caller", chassis.WithoutSignals(), chassis.WithEnv(env(callerEnv...)))
	if err != nil {
		t.Fatal(err)
	}
	// Observation only: the interceptor runs below the client's policies, once per attempt.
	c.conn = caller.GRPCClient("rolling", chassis.WithGRPC(grpcclient.WithInterceptors(c.attempts.unary, nil)))
	start(t, caller)
	return c, insts
}

// start starts one instance as a deployment would (free ports, the registry, a short DRAIN_DELAY)
// and waits until it is ready and listed (passing) in the registry.
func (c *rollingCluster) start(t *testing.T) *rollingInstance {
	t.Helper()
	p := &rollingInstance{cmd: exec.Command(c.bin), logs: &syncbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOST=127.0.0.1", "PORT=0", "ADMIN_PORT=0", "GRPC_PORT=0",
		"DRAIN_DELAY=1s", "ACCESS_LOG=false"}, c.reg.env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "ready" {
				addr, _ := m["grpc_addr"].(string)
				ready <- addr
			}
		}
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("instance %s's output:\n%s", p.grpcAddr, p.logs.String())
		}
	})
	select {
	case p.grpcAddr = <-ready:
	case <-p.exited:
		t.Fatalf("instance exited before ready: %v\n%s", p.exitErr, p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("instance not ready after 30s\n%s", p.logs.String())
	}
	_, p.port, _ = net.SplitHostPort(p.grpcAddr)
	for deadline := time.Now().Add(10 * time.Second); p.id == ""; time.Sleep(20 * time.Millisecond) {
		var err error
		p.id, err = c.reg.idOf(p.port)
		if p.id == "" && time.Now().After(deadline) {
			t.Fatalf("instance %s not listed in %s with its grpc_port after 10s (%v)", p.grpcAddr, c.reg.name, err)
		}
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *rollingInstance) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Errorf("instance %s exited with %v after SIGTERM", p.grpcAddr, p.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("instance %s still running 30s after SIGTERM", p.grpcAddr)
	}
}

// attemptLog records the client's attempts per instance, from an interceptor of
// grpcclient.WithInterceptors: they run for every attempt, after the balancer chose the instance.
type attemptLog struct {
	mu sync.Mutex
	by map[string]*attemptStats // by instance id
}

type attemptStats struct {
	n, failed int
	unsent    int         // failed attempts the picker refused, the instance being no longer connected
	starts    []time.Time // when each attempt started
	firstErr  error       // of the first failed attempt that was sent
}

// since returns how many attempts started after t, and when the last of them started.
func (s attemptStats) since(t time.Time) (n int, last time.Time) {
	for _, at := range s.starts {
		if at.After(t) {
			n++
			if at.After(last) {
				last = at
			}
		}
	}
	return n, last
}

func (a *attemptLog) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	id, _ := grpcclient.Instance(ctx)
	at := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.by[id]
	if s == nil {
		s = &attemptStats{}
		a.by[id] = s
	}
	s.n++
	switch {
	case err == nil:
	case strings.Contains(err.Error(), "grpcclient: instance "+id+" not connected"):
		// The balancer picked the instance just before its connection went (a pick races the
		// update of the connection table): the picker refused the attempt unsent, and the
		// policies pick again, for any method.
		s.failed++
		s.unsent++
	default:
		s.failed++
		if s.firstErr == nil {
			s.firstErr = fmt.Errorf("%s %v after start: %w", method, time.Since(at).Round(time.Microsecond), err)
		}
	}
	s.starts = append(s.starts, at)
	return err
}

func (a *attemptLog) get(id string) attemptStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.by[id]; s != nil {
		st := *s
		st.starts = slices.Clone(s.starts)
		return st
	}
	return attemptStats{}
}

// grpcLoad is steady load of fixed concurrency: workers per method, each calling in a loop, for at
// most two minutes.
type grpcLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	calls  map[string]int         // by method
	failed map[string][]callError // by method
	served map[string]int         // successful calls by the gRPC address that answered
}

type callError struct {
	at  time.Time
	err error
}

func startGRPCLoad(conn *grpc.ClientConn, workers map[string]int) *grpcLoad {
	l := &grpcLoad{stop: make(chan struct{}), calls: map[string]int{}, failed: map[string][]callError{}, served: map[string]int{}}
	limit := time.Now().Add(2 * time.Minute)
	for method, n := range workers {
		for range n {
			l.wg.Go(func() {
				for time.Now().Before(limit) {
					select {
					case <-l.stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					reply := new(wrapperspb.StringValue)
					err := conn.Invoke(ctx, method, durationpb.New(rollingWork), reply)
					cancel()
					l.mu.Lock()
					l.calls[method]++
					if err != nil {
						l.failed[method] = append(l.failed[method], callError{at: time.Now(), err: err})
					} else {
						l.served[reply.GetValue()]++
					}
					l.mu.Unlock()
				}
			})
		}
	}
	return l
}

// finish stops the workers and waits for their calls in progress.
func (l *grpcLoad) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitServed waits until each instance answered at least n calls.
func (l *grpcLoad) waitServed(t *testing.T, n int, insts ...*rollingInstance) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		least := n
		for _, p := range insts {
			least = min(least, l.served[p.grpcAddr])
		}
		served := fmt.Sprint(l.served)
		l.mu.Unlock()
		if least >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every instance answered %d calls after 20s: %s", n, served)
		}
	}
}

// results returns the calls made and those failed, by method.
func (l *grpcLoad) results() (calls map[string]int, failed map[string][]callError) {
	l.mu.Lock()
	defer l.mu.Unlock()
	failed = map[string][]callError{}
	for m, errs := range l.failed {
		failed[m] = slices.Clone(errs)
	}
	return maps.Clone(l.calls), failed
}

// TestGRPCRollingRestartLosesNoCall restarts three gRPC instances one at a time, registered in a
// real Consul agent, under steady load from a chassis gRPC client with default settings (8 callers
// in a loop: 4 on the idempotent Get, 4 on Put, which is never retried), in the two orders of a
// rolling deployment: in place (SIGTERM, exit, then the new instance starts: two instances serve
// meanwhile, as with Kubernetes' maxUnavailable=1 or a restart by a process manager), and with a
// surge (the new instance starts and passes in Consul, then the old one gets SIGTERM). The old
// one drains: gRPC health NOT_SERVING, deregistration, DRAIN_DELAY, GracefulStop. No call may
// fail, Put's included: the client stops picking an instance when its deregistration arrives by
// the Consul watch, during DRAIN_DELAY, before the server stops, and the calls in progress then
// finish on the open connection.
func TestGRPCRollingRestartLosesNoCall(t *testing.T) { rollingRestart(t, consulRegistry) }

// rollingRestart runs TestGRPCRollingRestartLosesNoCall's two rolling restarts on a registry.
func rollingRestart(t *testing.T, registry func(*testing.T) rollingRegistry) {
	for _, tc := range []struct {
		name    string
		inPlace bool
	}{{"in-place", true}, {"surge", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c, olds := startRollingCluster(t, 3, registry)
			load := startGRPCLoad(c.conn, map[string]int{rollingGet: 4, rollingPut: 4})
			defer load.finish()
			load.waitServed(t, 20, olds...) // steady state on the three old instances

			t0 := time.Now()
			var news []*rollingInstance
			unsent := 0
			for _, old := range olds {
				if tc.inPlace {
					old.stop(t)
					news = append(news, c.start(t))
				} else {
					news = append(news, c.start(t))
					old.stop(t)
				}
				s := c.attempts.get(old.id)
				if s.failed > s.unsent {
					t.Errorf("%d of %d attempts sent to the drained instance %s failed; first: %v", s.failed-s.unsent, s.n, old.id, s.firstErr)
				}
				unsent += s.unsent
			}
			took := time.Since(t0)
			load.waitServed(t, 20, news...) // traffic on the new instances only
			load.finish()

			calls, failed := load.results()
			for _, m := range []string{rollingGet, rollingPut} {
				if len(failed[m]) > 0 {
					t.Errorf("%s: %d of %d calls failed during the rolling restart; first: %v", m, len(failed[m]), calls[m], failed[m][0].err)
				}
				if calls[m] == 0 {
					t.Errorf("%s: no call made", m)
				}
			}
			if n, err := c.reg.count(); err != nil || n != 3 {
				t.Errorf("instances listed in %s after the restart: %d (%v), want 3", c.reg.name, n, err)
			}
			t.Logf("rolling restart (%s) of 3 instances in %v: Get %d calls, %d failed; Put (not idempotent) %d calls, %d failed; "+
				"%d attempts refused unsent on a drained instance and sent again", tc.name, took.Round(time.Millisecond),
				calls[rollingGet], len(failed[rollingGet]), calls[rollingPut], len(failed[rollingPut]), unsent)
		})
	}
}

// TestGRPCKilledInstanceLeavesRotation kills one of three instances with SIGKILL under steady
// load (6 callers on the idempotent Get, 2 on Put). No Get may fail: the attempts in progress on
// the dead instance fail with UNAVAILABLE and are retried on another. The dead instance must be out
// of rotation within 1 s of the kill, long before Consul's check notices (its 5 s interval): the
// kernel closes the dead process's sockets, so the client's HTTP/2 connection reads EOF at once;
// the connection leaves READY, the balancer publishes it as unusable (an instance that was
// connected is picked again only once READY), and the next picks skip it. Nothing in that chain
// waits for a timer (keepalive, health check, Consul), so the bound has a wide margin; the test
// reports the figure, the attempts that failed on the dead instance, the Puts lost (only those in
// progress at the kill can fail: never more than one per Put caller), and how long Consul's
// check took to turn critical and take the instance out of the passing list.
func TestGRPCKilledInstanceLeavesRotation(t *testing.T) { killedLeavesRotation(t, consulRegistry, 0) }

// killedLeavesRotation runs TestGRPCKilledInstanceLeavesRotation on a registry, which must delist
// the dead instance within maxDelist (0: no bound beyond 30 s).
func killedLeavesRotation(t *testing.T, registry func(*testing.T) rollingRegistry, maxDelist time.Duration) {
	c, insts := startRollingCluster(t, 3, registry)
	const putCallers = 2
	load := startGRPCLoad(c.conn, map[string]int{rollingGet: 6, rollingPut: putCallers})
	defer load.finish()
	load.waitServed(t, 20, insts...)

	victim := insts[0]
	killed := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed instance did not exit")
	}

	// The registry's side: Consul's HTTP check (GET /readyz on the admin port) turns critical, or
	// etcd's lease expires, and the instance leaves the list.
	var delisted time.Duration
	for deadline := killed.Add(30 * time.Second); delisted == 0; time.Sleep(50 * time.Millisecond) {
		id, err := c.reg.idOf(victim.port)
		if err == nil && id == "" {
			delisted = time.Since(killed)
		}
		if delisted == 0 && time.Now().After(deadline) {
			t.Fatalf("the killed instance still listed in %s after 30s (%v)", c.reg.name, err)
		}
	}
	if maxDelist > 0 && delisted > maxDelist {
		t.Errorf("the killed instance left %s %v after the kill, want within %v", c.reg.name, delisted, maxDelist)
	}
	if wait := time.Until(killed.Add(3 * time.Second)); wait > 0 {
		time.Sleep(wait) // load on the survivors for a while, whatever Consul's timing
	}
	load.waitServed(t, 20, insts[1:]...)
	load.finish()

	s := c.attempts.get(victim.id)
	late, last := s.since(killed)
	var out time.Duration // from the kill to the start of the last attempt on the dead instance
	if late > 0 {
		out = last.Sub(killed)
	}
	if out > time.Second {
		t.Errorf("attempts went to the killed instance for %v after the kill, want ≤ 1s", out)
	}
	calls, failed := load.results()
	if len(failed[rollingGet]) > 0 {
		t.Errorf("%d of %d idempotent calls failed; first: %v", len(failed[rollingGet]), calls[rollingGet], failed[rollingGet][0].err)
	}
	if n := len(failed[rollingPut]); n > putCallers {
		t.Errorf("%d Puts failed, more than the %d in progress at the kill at most; first: %v", n, putCallers, failed[rollingPut][0].err)
	}
	for _, f := range failed[rollingPut] {
		if status.Code(f.err) != codes.Unavailable || f.at.Sub(killed) > time.Second {
			t.Errorf("Put failed %v after the kill with %v, want UNAVAILABLE at the kill", f.at.Sub(killed), f.err)
		}
	}
	if calls[rollingGet] == 0 {
		t.Error("no Get made")
	}
	t.Logf("SIGKILL of 1 of 3: out of rotation %v after the kill (the last attempt on it; %d attempts on it, %d of them "+
		"started after the kill, %d failed); Get %d calls, %d failed; Put (not idempotent) %d calls, %d failed; "+
		"delisted by %s after %v",
		out.Round(time.Microsecond), s.n, late, s.failed, calls[rollingGet], len(failed[rollingGet]),
		calls[rollingPut], len(failed[rollingPut]), c.reg.name, delisted.Round(time.Millisecond))
	for _, f := range failed[rollingPut] {
		t.Logf("Put failed %v after the kill: %v", f.at.Sub(killed).Round(time.Microsecond), f.err)
	}
}
