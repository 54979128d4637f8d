package election_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/consultest"
)

// Timing of the real-Consul tests: Consul's minimum TTL, a short lock-delay.
const (
	itTTL       = 10 * time.Second
	itLockDelay = time.Second
	// Consul expires a TTL session between 1x and 2x its TTL after the last renewal (it doubles the
	// TTL server-side as a grace period), then lock-delay applies: that is the bound for a successor.
	itFailoverBound = 2*itTTL + itLockDelay
)

// storage is the shared resource: it accepts a write only with a token at least as high as the
// highest it has accepted, as a fenced database or object store would.
type storage struct {
	mu       sync.Mutex
	highest  uint64
	accepted int
	owner    map[uint64]string // token -> the only candidate ID that ever used it
	rejected map[uint64]int    // token -> refused writes
	problems []string
}

func newStorage(t *testing.T) (*storage, string) {
	s := &storage{owner: map[uint64]string{}, rejected: map[uint64]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := strconv.ParseUint(r.URL.Query().Get("token"), 10, 64)
		if err != nil {
			http.Error(w, "bad token", http.StatusBadRequest)
			return
		}
		id := r.URL.Query().Get("id")
		s.mu.Lock()
		defer s.mu.Unlock()
		if o, ok := s.owner[tok]; ok && o != id {
			s.problems = append(s.problems, fmt.Sprintf("token %d used by %s and %s", tok, o, id))
		}
		s.owner[tok] = id
		if tok < s.highest {
			s.rejected[tok]++
			w.WriteHeader(http.StatusConflict)
			return
		}
		s.highest = tok
		s.accepted++
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *storage) snapshot() (highest uint64, accepted int, rejected map[uint64]int, problems []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := map[uint64]int{}
	for k, v := range s.rejected {
		r[k] = v
	}
	return s.highest, s.accepted, r, append([]string(nil), s.problems...)
}

type event struct {
	kind, id string
	token    uint64
	at       time.Time
	line     string
}

type proc struct {
	id   string
	cmd  *exec.Cmd
	done chan struct{}
}

func buildContender(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "contender")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "build", "-o", bin, "./testdata/contender").CombinedOutput()
	if err != nil {
		t.Fatalf("building the contender: %v\n%s", err, out)
	}
	return bin
}

func startContender(t *testing.T, bin, consulAddr, key, id, storageURL string, events chan<- event) *proc {
	t.Helper()
	cmd := exec.Command(bin, "-consul", consulAddr, "-key", key, "-id", id, "-storage", storageURL,
		"-ttl", itTTL.String(), "-lock-delay", itLockDelay.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{id: id, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			ev := event{at: time.Now(), line: sc.Text()}
			if len(f) >= 2 {
				ev.kind, ev.id = f[0], f[1]
			}
			if len(f) >= 3 {
				ev.token, _ = strconv.ParseUint(f[2], 10, 64)
			}
			select {
			case events <- ev:
			default: // the test stopped listening; drain until the process exits
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Process.Signal(syscall.SIGCONT)
		<-p.done
	})
	return p
}

// waitFor returns the next event of kind (from id, if not empty), logging the others.
func waitFor(t *testing.T, events <-chan event, kind, id string, timeout time.Duration) event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-events:
			if ev.kind == kind && (id == "" || ev.id == id) {
				return ev
			}
			if ev.kind != "fenced" {
				t.Logf("event: %s", ev.line)
			}
		case <-deadline:
			t.Fatalf("no %q event from %q within %v", kind, id, timeout)
		}
	}
}

// TestProcessesFailoverWithFencing runs three contender processes against a real Consul agent and
// a fenced storage server, then pauses the leader (SIGSTOP), kills the next one (SIGKILL) and
// drains the third (SIGTERM), measuring each handover.
func TestProcessesFailoverWithFencing(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs consul and three processes for about a minute; skipped with -short")
	}
	agent := consultest.StartDev(t)
	bin := buildContender(t)
	st, storageURL := newStorage(t)
	const key = "it/fencing/leader"
	events := make(chan event, 10000)
	procs := map[string]*proc{}
	for _, id := range []string{"c1", "c2", "c3"} {
		procs[id] = startContender(t, bin, agent.HTTPAddr, key, id, storageURL, events)
	}
	var elected []event

	// 1. A leader is elected and writes.
	e1 := waitFor(t, events, "elected", "", 30*time.Second)
	elected = append(elected, e1)
	time.Sleep(500 * time.Millisecond)

	// 2. The leader is paused, as by a long GC pause or a stopped VM: it still believes it leads.
	if err := procs[e1.id].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	e2 := waitFor(t, events, "elected", "", itFailoverBound+15*time.Second)
	elected = append(elected, e2)
	t.Logf("MEASURED: paused leader %s replaced by %s after %v (TTL %v, lock-delay %v, bound 2xTTL+lock-delay %v)",
		e1.id, e2.id, e2.at.Sub(paused).Round(time.Millisecond), itTTL, itLockDelay, itFailoverBound)
	time.Sleep(500 * time.Millisecond)
	// Resumed, the old leader writes with its old token before it notices the loss: fenced.
	if err := procs[e1.id].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "revoked", e1.id, 30*time.Second)

	// 3. The new leader is killed: no release, the session must expire.
	time.Sleep(500 * time.Millisecond)
	if err := procs[e2.id].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	e3 := waitFor(t, events, "elected", "", itFailoverBound+15*time.Second)
	elected = append(elected, e3)
	failover := e3.at.Sub(killed)
	t.Logf("MEASURED: SIGKILL of leader %s -> new leader %s after %v (bound %v)", e2.id, e3.id, failover.Round(time.Millisecond), itFailoverBound)
	if failover > itFailoverBound+2*time.Second {
		t.Errorf("failover took %v, more than 2xTTL + lock-delay (%v) plus 2s of slack", failover, itFailoverBound)
	}

	// 4. The leader drains (SIGTERM): a clean step-down, no lock-delay.
	time.Sleep(500 * time.Millisecond)
	if err := procs[e3.id].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drained := time.Now()
	e4 := waitFor(t, events, "elected", "", 10*time.Second)
	elected = append(elected, e4)
	t.Logf("MEASURED: SIGTERM of leader %s -> new leader %s after %v", e3.id, e4.id, e4.at.Sub(drained).Round(time.Millisecond))
	if d := e4.at.Sub(drained); d > 3*time.Second {
		t.Errorf("clean step-down took %v to hand over, want well under lock-delay + a second", d)
	}
	time.Sleep(500 * time.Millisecond)

	for i := 1; i < len(elected); i++ {
		if elected[i].token <= elected[i-1].token {
			t.Errorf("leader %s token %d not above the previous leader %s's %d", elected[i].id, elected[i].token, elected[i-1].id, elected[i-1].token)
		}
	}
	highest, accepted, rejected, problems := st.snapshot()
	t.Logf("storage: %d writes accepted, highest token %d, refused stale writes by token %v", accepted, highest, rejected)
	for _, p := range problems {
		t.Error(p)
	}
	if highest != e4.token {
		t.Errorf("highest token in storage %d, want the last leader's %d", highest, e4.token)
	}
	if rejected[e1.token] == 0 {
		t.Errorf("the paused leader's writes with token %d were never refused: fencing not exercised", e1.token)
	}
	for tok := range rejected {
		if tok >= e2.token && tok != e2.token && tok != e3.token {
			t.Errorf("refused writes with token %d, which no superseded leader had", tok)
		}
	}
}

// TestClusterLeaderLoss runs candidates against a 3-server cluster, one per server, and kills the
// raft leader: the election continues once the servers have elected a new raft leader.
func TestClusterLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a 3-server consul cluster; skipped with -short")
	}
	cluster := consultest.StartCluster(t, 3)
	const key = "it/cluster/leader"
	type cand struct{ e *election.Election }
	var mu sync.Mutex
	var log []string
	var cands []cand
	for i, srv := range cluster.Servers {
		id := "c" + strconv.Itoa(i+1)
		e, err := election.New(lock.NewConsulClient(srv.Client), key, id,
			election.WithLockOptions(lock.WithTTL(itTTL), lock.WithLockDelay(itLockDelay), lock.WithRetryWait(100*time.Millisecond)),
			// Long enough that after the Resign below another candidate, not the same one, takes over.
			election.WithRejoinDelay(20*time.Second),
			election.WithOnElected(func(ctx context.Context, tok lock.Token) {
				mu.Lock()
				log = append(log, fmt.Sprintf("%s elected %d", id, tok))
				mu.Unlock()
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = e.Stop(ctx) // a candidate on the killed server cannot release: its session expires
		})
		cands = append(cands, cand{e})
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	raftLeader := cluster.Leader()
	var survivor *consultest.Agent
	for _, s := range cluster.Servers {
		if s != raftLeader {
			survivor = s
			break
		}
	}
	obs := election.NewObserver(lock.NewConsulClient(survivor.Client), key)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var before election.Leader
	for !before.Exists() {
		l, err := obs.Next(ctx)
		if err != nil {
			t.Fatalf("no election leader before the raft leader loss: %v", err)
		}
		before = l
	}
	t.Logf("election leader %s (token %d); killing raft leader %s", before.Value, before.Token, raftLeader.Name)
	raftLeader.Kill()
	killed := time.Now()
	newRaft := cluster.WaitLeader(consultest.ClusterReadyTimeout)
	t.Logf("MEASURED: raft leader %s -> %s after %v", raftLeader.Name, newRaft.Name, time.Since(killed).Round(time.Millisecond))

	// The election keeps a leader on a surviving server, with a token not lower than before: the
	// old one if its session survived, otherwise a successor after expiry and lock-delay.
	dead := "c" + strconv.Itoa(indexOf(cluster, raftLeader)+1)
	after := waitLeader(t, cands[indexOf(cluster, newRaft)].e, itFailoverBound+40*time.Second,
		func(l election.Leader) bool { return l.Value != dead })
	mu.Lock()
	t.Logf("elections: %q", log)
	mu.Unlock()
	t.Logf("MEASURED: election leader after the raft leader loss: %s (token %d), %v after the kill", after.Value, after.Token, time.Since(killed).Round(time.Millisecond))
	if after.Token < before.Token {
		t.Fatalf("token went backwards: %d after %d", after.Token, before.Token)
	}
	// And elections still work on the new raft leader: the leader resigns, another takes over.
	leaderIdx, _ := strconv.Atoi(strings.TrimPrefix(after.Value, "c"))
	if err := cands[leaderIdx-1].e.Resign(ctx); err != nil {
		t.Fatalf("Resign after the raft leader loss: %v", err)
	}
	resigned := time.Now()
	next := waitLeader(t, cands[indexOf(cluster, newRaft)].e, 20*time.Second,
		func(l election.Leader) bool { return l.Value != dead && l.Value != after.Value })
	t.Logf("MEASURED: after resign: leader %s (token %d) %v later", next.Value, next.Token, time.Since(resigned).Round(time.Millisecond))
	if next.Token <= after.Token {
		t.Fatalf("token %d not above %d", next.Token, after.Token)
	}
}

// waitLeader polls e.Leader until ok accepts an existing leader.
func waitLeader(t *testing.T, e *election.Election, timeout time.Duration, ok func(election.Leader) bool) election.Leader {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := e.Leader(ctx)
		cancel()
		if err == nil && l.Exists() && ok(l) {
			return l
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no suitable election leader within %v (last error %v)", timeout, last)
	return election.Leader{}
}

func indexOf(c *consultest.Cluster, a *consultest.Agent) int {
	for i, s := range c.Servers {
		if s == a {
			return i
		}
	}
	return 0
}
