package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// chaos performs the chaos actions, on schedule or on the dashboard's request. Only one action
// runs at a time (they would blur each other's reaction), and every action is bounded.
type chaos struct {
	c       *cluster
	reg     registry
	load    *loadGen
	stats   *stats
	tl      *timeline
	token   string // pricing's CHAOS_TOKEN
	rng     *rand.Rand
	baseRPS float64

	mu   sync.Mutex // guards rng
	http *http.Client
	wg   sync.WaitGroup // replacements started by kill
}

func newChaos(c *cluster, reg registry, load *loadGen, st *stats, tl *timeline, token string, seed uint64) *chaos {
	return &chaos{c: c, reg: reg, load: load, stats: st, tl: tl, token: token, baseRPS: load.Rate(),
		rng: rand.New(rand.NewPCG(seed, seed+1)), http: &http.Client{Timeout: 5 * time.Second}}
}

// step is one entry of the chaos schedule: an action at a fraction of the run.
type step struct {
	at     float64 // fraction of the duration
	length float64 // fraction of the duration, for actions that last
	do     func(ctx context.Context, c *chaos, d time.Duration) error
}

// schedule is the default chaos: every kind of trouble once, spread over the run, with calm time in
// between so that each reaction can be read on its own.
var schedule = []step{
	{at: 0.15, do: func(ctx context.Context, c *chaos, _ time.Duration) error { return c.killRandom(ctx) }},
	{at: 0.28, length: 0.12, do: func(ctx context.Context, c *chaos, d time.Duration) error { return c.slowRandom(ctx, d) }},
	{at: 0.45, do: func(ctx context.Context, c *chaos, _ time.Duration) error { return c.rolling(ctx, "gateway") }},
	{at: 0.64, length: 0.10, do: func(ctx context.Context, c *chaos, d time.Duration) error { return c.outage(ctx, d) }},
	{at: 0.80, length: 0.10, do: func(ctx context.Context, c *chaos, d time.Duration) error { return c.spike(ctx, d) }},
}

// cycle is the schedule's period when the demo runs until Ctrl-C.
const cycle = 60 * time.Second

// run follows the schedule from start over period, once or one cycle after another when repeat,
// until ctx is done.
func (ch *chaos) run(ctx context.Context, start time.Time, period time.Duration, repeat bool) {
	defer ch.wg.Wait()
	for base := start; ; base = base.Add(period) {
		for _, s := range schedule {
			at := base.Add(time.Duration(s.at * float64(period)))
			if !sleepUntil(ctx, at) {
				return
			}
			length := max(2*time.Second, time.Duration(s.length*float64(period)))
			if err := s.do(ctx, ch, length); err != nil && ctx.Err() == nil {
				ch.tl.add(Event{Kind: EventInfo, Detail: "chaos step failed: " + err.Error()})
			}
		}
		if !repeat {
			return
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func (ch *chaos) pick(service string) (*proc, error) {
	live := ch.c.live(service)
	live = slices.DeleteFunc(live, func(p *proc) bool { return p.snapshot().State != StateReady })
	if len(live) == 0 {
		return nil, fmt.Errorf("%w of %q", errNoInstance, service)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].ID < live[j].ID })
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return live[ch.rng.IntN(len(live))], nil
}

// killRandom SIGKILLs a random instance of a random service other than the gateway's entry point
// set's last member, then starts a replacement, as a supervisor would.
func (ch *chaos) killRandom(ctx context.Context) error {
	ch.mu.Lock()
	svc := services[ch.rng.IntN(len(services))]
	ch.mu.Unlock()
	p, err := ch.pick(svc)
	if err != nil {
		return err
	}
	return ch.kill(ctx, p.ID)
}

// kill SIGKILLs the instance id and starts a replacement. The event's reaction is how long until
// the replacement was ready and until requests stopped failing.
func (ch *chaos) kill(ctx context.Context, id string) error {
	p := ch.c.find(id)
	if p == nil {
		return fmt.Errorf("no instance %q", id)
	}
	if st := p.snapshot().State; st != StateReady && st != StateStarting {
		return fmt.Errorf("%s is %s", id, st)
	}
	ev := ch.tl.add(Event{Kind: EventKill, Target: id, Chaos: true, Detail: "SIGKILL " + id + ": no drain, no deregistration, as when its machine dies"})
	if err := ch.c.kill(p); err != nil {
		return err
	}
	ch.wg.Go(func() {
		t0 := ev.At
		rp, err := ch.c.start(ctx, p.Service)
		replaced := ""
		if err == nil {
			replaced = fmt.Sprintf("replacement %s ready %dms after the kill", rp.ID, time.Since(t0).Milliseconds())
			ch.tl.add(Event{Kind: EventStart, Target: rp.ID, Detail: rp.ID + " started to replace " + id})
		} else if ctx.Err() == nil {
			replaced = "replacement failed: " + err.Error()
		}
		ch.observe(ctx, ev, t0, 5*time.Second, replaced)
	})
	return nil
}

// observe waits for the settle time after an event and records the requests and failures from the
// event's start to then, and when the last failure happened.
func (ch *chaos) observe(ctx context.Context, ev *Event, t0 time.Time, settle time.Duration, extra string) {
	end := time.Now().Add(settle)
	sleepUntil(ctx, end)
	end = time.Now()
	n, f := ch.stats.between(t0, end)
	last := ch.stats.lastFailure(t0, end)
	fails := ch.stats.failuresBetween(t0, end)
	ch.tl.finish(ev, func(e *Event) {
		e.Requests, e.Failures = n, f
		e.Duration = roundTo(end.Sub(t0).Seconds(), 0.1)
		if !last.IsZero() {
			e.RecoverySeconds = roundTo(max(0, last.Sub(t0).Seconds()), 0.1)
		}
		e.Reaction = reaction(n, f, e.RecoverySeconds, fails, extra)
	})
}

// reaction is an event's computed reaction: its requests and failures, why those failed (status,
// route, instance and reason, from stats.failuresBetween) and what the action itself measured.
func reaction(n, f int, recovery float64, fails []Failure, extra string) string {
	s := fmt.Sprintf("%d requests, %d failed (%.2f%% ok)", n, f, 100*rate(n-f, n))
	if f > 0 {
		if len(fails) > 0 {
			s += ": " + explainFailures(fails)
		}
		if recovery > 0 {
			s += fmt.Sprintf("; last failure %.1fs after the event", recovery)
		}
	}
	if extra != "" {
		s += "; " + extra
	}
	return s
}

// slowRandom slows one pricing instance down for d.
func (ch *chaos) slowRandom(ctx context.Context, d time.Duration) error {
	p, err := ch.pick("pricing")
	if err != nil {
		return err
	}
	return ch.slow(ctx, p.ID, d)
}

// slowLatency is what a slowed pricing instance adds to every request: under the gateway's pricing
// timeout, so that the answers still come, but far above the others' latency, so that the P2C
// balancers' peak-EWMA notices.
const slowLatency = 150 * time.Millisecond

// Windows around a slowdown in which the slowed instance's share of its service's calls is measured.
const (
	shareBefore = 5 * time.Second
	shareAfter  = 3 * time.Second
)

// slow adds slowLatency to every request of the pricing instance id for d, then restores it. The
// reaction is the instance's measured share of pricing calls in the seconds before, while slow and
// after, and says the balancers steered around it only if the share while slow was at most half the
// share before (see steering).
func (ch *chaos) slow(ctx context.Context, id string, d time.Duration) error {
	p := ch.c.find(id)
	if p == nil || p.Service != "pricing" {
		return fmt.Errorf("%q is not a pricing instance", id)
	}
	addr := p.snapshot().Addr
	if err := ch.setFaults(ctx, addr, fmt.Sprintf(`{"latency":%q}`, slowLatency.String())); err != nil {
		return err
	}
	ev := ch.tl.add(Event{Kind: EventSlow, Target: id, Chaos: true,
		Detail: fmt.Sprintf("%s answers %s slower for %s (PUT /chaos)", id, slowLatency, d.Round(100*time.Millisecond))})
	fair := 1 / float64(max(1, len(ch.c.live("pricing"))))
	sleepUntil(ctx, ev.At.Add(d))
	clearErr := ch.setFaults(context.Background(), addr, "")
	restored := time.Now()
	n, f := ch.stats.between(ev.At, restored)
	fails := ch.stats.failuresBetween(ev.At, restored)
	before := ch.stats.shareBetween("pricing", id, ev.At.Add(-shareBefore), ev.At)
	during := ch.stats.shareBetween("pricing", id, ev.At, restored)
	// The share after the restore is measured in the background: the next action need not wait.
	ch.wg.Go(func() {
		sleepUntil(ctx, restored.Add(shareAfter+time.Second)) // the last whole second has ended
		after := ch.stats.shareBetween("pricing", id, restored, restored.Add(shareAfter))
		ch.tl.finish(ev, func(e *Event) {
			e.Requests, e.Failures = n, f
			e.Duration = roundTo(restored.Sub(ev.At).Seconds(), 0.1)
			e.Reaction = reaction(n, f, 0, fails, steering(id, fair, before, during, after))
			if clearErr != nil {
				e.Reaction += "; restoring failed: " + clearErr.Error()
			}
		})
	})
	return nil
}

// minShareCalls is how many calls a window needs before a share measured in it means anything.
const minShareCalls = 20

// steering describes a slowed instance's measured share of its service's calls before, while and
// after it was slow, and says the balancers steered around it only when they did: its share while
// slow was at most half its share before (or, without enough calls before, half its fair share).
func steering(id string, fair float64, before, during, after shareCount) string {
	pct := func(c shareCount) string {
		if v, ok := c.share(); ok && c.all >= minShareCalls {
			return fmt.Sprintf("%.0f%% of %d", 100*v, c.all)
		}
		return fmt.Sprintf("n/a (%d calls)", c.all)
	}
	s := fmt.Sprintf("%s's share of pricing calls: %s in the %s before, %s while slow, %s in the %s after (fair share %.0f%%)",
		id, pct(before), shareBefore, pct(during), pct(after), shareAfter, 100*fair)
	cur, ok := during.share()
	if !ok || during.all < minShareCalls {
		return s + ": too few calls while slow to tell whether the balancers steered around it"
	}
	base, basis := fair, "its fair share"
	if v, ok := before.share(); ok && before.all >= minShareCalls {
		base, basis = v, "its share before"
	}
	if cur <= base/2 {
		return s + ": the balancers steered around it"
	}
	return s + fmt.Sprintf(": the balancers did not steer around it (its share while slow was more than half %s)", basis)
}

// setFaults PUTs faults to an instance's /chaos, or DELETEs them when faults is empty.
func (ch *chaos) setFaults(ctx context.Context, addr, faults string) error {
	method := http.MethodPut
	if faults == "" {
		method = http.MethodDelete
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/chaos", bytes.NewBufferString(faults))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+ch.token)
	res, err := ch.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s /chaos: %w", method, err)
	}
	_ = res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s /chaos: %s", method, res.Status)
	}
	return nil
}

// rolling replaces every instance of service one at a time: start the new one, wait until it is
// ready, SIGTERM the old one and wait for its drain, as a deployment does.
func (ch *chaos) rolling(ctx context.Context, service string) error {
	olds := ch.c.live(service)
	if len(olds) == 0 {
		return fmt.Errorf("%w of %q", errNoInstance, service)
	}
	ev := ch.tl.add(Event{Kind: EventRolling, Target: service, Chaos: true,
		Detail: fmt.Sprintf("rolling restart of %d %s instances: start new, wait ready, SIGTERM old, wait for its drain", len(olds), service)})
	var errs []error
	for _, old := range olds {
		if ctx.Err() != nil {
			break
		}
		np, err := ch.c.replace(ctx, old)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ch.tl.add(Event{Kind: EventStart, Target: np.ID, Detail: np.ID + " replaced " + old.ID + " (drained and stopped)"})
	}
	ch.observe(ctx, ev, ev.At, 2*time.Second, fmt.Sprintf("took %.1fs", time.Since(ev.At).Seconds()))
	return errors.Join(errs...)
}

// outage makes the registry unreachable for d. Services keep their last known instance lists.
func (ch *chaos) outage(ctx context.Context, d time.Duration) error {
	if err := ch.reg.Outage(true); err != nil {
		return err
	}
	ev := ch.tl.add(Event{Kind: EventOutage, Target: "registry", Chaos: true,
		Detail: fmt.Sprintf("%s unreachable for %s: connections refused, blocking queries cut", ch.reg.Kind(), d.Round(100*time.Millisecond))})
	sleepUntil(ctx, ev.At.Add(d))
	err := ch.reg.Outage(false)
	ch.tl.add(Event{Kind: EventRecovery, Target: "registry", Detail: "registry reachable again"})
	ch.observe(ctx, ev, ev.At, 2*time.Second, "services kept serving from their last known instance lists")
	return err
}

// spike triples the request rate for d.
func (ch *chaos) spike(ctx context.Context, d time.Duration) error {
	base := ch.load.Rate()
	before := ch.stats.p99Between(time.Now().Add(-5*time.Second), time.Now())
	ch.load.setRate(base * 3)
	ev := ch.tl.add(Event{Kind: EventSpike, Target: "load", Chaos: true,
		Detail: fmt.Sprintf("load spike: %.0f → %.0f requests/s for %s", base, base*3, d.Round(100*time.Millisecond))})
	sleepUntil(ctx, ev.At.Add(d))
	ch.load.setRate(base)
	during := ch.stats.p99Between(ev.At, time.Now())
	ch.observe(ctx, ev, ev.At, time.Second, fmt.Sprintf("p99 %s before, %s during", before.Round(100*time.Microsecond), during.Round(100*time.Microsecond)))
	return nil
}

// act runs a chaos action the dashboard asked for, in the background.
func (ch *chaos) act(ctx context.Context, action, target string) error {
	var f func() error
	switch action {
	case "kill":
		if ch.c.find(target) == nil {
			return fmt.Errorf("no instance %q", target)
		}
		f = func() error { return ch.kill(ctx, target) }
	case "slow":
		f = func() error { return ch.slow(ctx, target, 10*time.Second) }
	case "rolling":
		if !slices.Contains(services, target) {
			return fmt.Errorf("no service %q", target)
		}
		f = func() error { return ch.rolling(ctx, target) }
	case "outage":
		f = func() error { return ch.outage(ctx, 5*time.Second) }
	case "spike":
		f = func() error { return ch.spike(ctx, 5*time.Second) }
	default:
		return fmt.Errorf("unknown action %q (kill, slow, rolling, outage, spike)", action)
	}
	ch.wg.Go(func() {
		if err := f(); err != nil && ctx.Err() == nil {
			ch.tl.add(Event{Kind: EventInfo, Detail: action + " " + target + ": " + err.Error()})
		}
	})
	return nil
}
