package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/backoff"
)

// Defaults.
const (
	// DefaultRejoinDelay is how long the Start loop waits after a Resign before it campaigns again,
	// so that another candidate takes over instead of this one winning straight back.
	DefaultRejoinDelay = time.Second
	// DefaultWaitTime bounds one blocking query of an Observer.
	DefaultWaitTime = time.Minute
	// DefaultMinInterval is the least time between two queries of an Observer.
	DefaultMinInterval = 50 * time.Millisecond
)

// Sentinel errors.
var (
	// ErrNotLeader is returned by Resign when this candidate is not the leader.
	ErrNotLeader = errors.New("election: not the leader")
	// ErrResigned is the cause given to OnRevoked after Resign.
	ErrResigned = errors.New("election: resigned")
	// ErrStopped is the cause given to OnRevoked after Stop.
	ErrStopped = errors.New("election: stopped")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("election: already started")
)

// Leader is the holder of the election key as observers see it. The zero Leader means nobody leads.
type Leader struct {
	Value   string     // what the leader campaigned with: its instance ID or address
	Session string     // its Consul session, or its etcd lease in hex
	Token   lock.Token // the leader's fencing token: the key's ModifyIndex (Consul) or CreateRevision (etcd)
}

// Exists reports whether somebody leads.
func (l Leader) Exists() bool { return l.Session != "" }

// Locker is the lock an Election campaigns with: *lock.Lock on Consul, *etcdsync.Lock on etcd. Both
// return the fencing token of a tenure from Acquire, close Lost when it ends and say why with Err.
type Locker interface {
	Key() string
	Acquire(ctx context.Context) (lock.Token, error)
	Release(ctx context.Context) error
	Close(ctx context.Context) error
	Lost() <-chan struct{}
	Err() error
	Token() (lock.Token, bool)
}

var _ Locker = (*lock.Lock)(nil)

// Source reads who leads: the engine's side of Election.Leader and Observer. With index 0 it reads
// the current leader at once; with the index it returned before, it first waits until the election
// may have changed after that index or an engine-chosen wait time passes. The returned index is the
// one to wait from next; an index lower than the one passed means the engine's history restarted.
// Reads are linearizable: a member cut off from the quorum answers with an error, not a stale leader.
type Source interface {
	Leader(ctx context.Context, index uint64) (Leader, uint64, error)
}

// Option configures an Election.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	lockOpts  []lock.Option
	onElected func(ctx context.Context, token lock.Token)
	onRevoked func(token lock.Token, cause error)
	rejoin    time.Duration
	logger    *slog.Logger
}

// WithLockOptions passes options to the underlying lock.Lock (TTL, lock-delay, logger, metrics).
// WithValue is set by New and must not be passed.
func WithLockOptions(opts ...lock.Option) Option {
	return optionFunc(func(o *options) { o.lockOpts = append(o.lockOpts, opts...) })
}

// WithOnElected sets the function the Start loop runs, in its own goroutine, each time this candidate
// becomes leader. ctx is cancelled when leadership ends (lost, resigned or stopped); the loop waits
// for fn to return before it releases the key, so the leader's work stops before a successor
// starts. fn must honour ctx.
func WithOnElected(fn func(ctx context.Context, token lock.Token)) Option {
	return optionFunc(func(o *options) { o.onElected = fn })
}

// WithOnRevoked sets the function the Start loop calls after leadership ended and the elected
// function returned. cause is a *lock.LostError, ErrResigned or ErrStopped.
func WithOnRevoked(fn func(token lock.Token, cause error)) Option {
	return optionFunc(func(o *options) { o.onRevoked = fn })
}

// WithRejoinDelay sets the pause after Resign before the Start loop campaigns again (default
// DefaultRejoinDelay).
func WithRejoinDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.rejoin = max(d, 0) })
}

// WithLogger sets the logger for elections and revocations (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// Election is one candidate for leadership of a key. The leader is the holder of a lock.Lock on the
// key, and its value is the candidate's identity, so everyone can read who leads.
//
// Use it either by hand (Campaign, Lost, Resign, Stop) or as a lifecycle component: Start runs a
// loop that campaigns, runs WithOnElected while leader and campaigns again after a loss; Stop steps
// down cleanly (the elected function returns, then the key is released, so a successor takes over
// at once, without lock-delay). An Election is safe for concurrent use.
type Election struct {
	src   Source
	key   string
	value string
	lock  Locker
	o     options

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
	resign  chan chan error
	stopped bool
}

// New returns a candidate that campaigns for key with value (its instance ID or address).
func New(c lock.Client, key, value string, opts ...Option) (*Election, error) {
	if value == "" {
		return nil, errors.New("election: New: empty value; use the instance ID or address")
	}
	o := buildOptions(opts)
	lopts := append(append([]lock.Option{lock.WithSessionName("election " + key), lock.WithLogger(o.logger)}, o.lockOpts...), lock.WithValue([]byte(value)))
	l, err := lock.New(c, key, lopts...)
	if err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}
	return newElection(l, consulSource{c: c, key: key}, value, o), nil
}

// NewWith returns a candidate that campaigns with l, whose value identifies it, and reads the leader
// from src: the way to run an election on another engine than Consul, for example
//
//	l, err := etcdsync.New(client, "/elections/catalog", etcdsync.WithValue([]byte(instanceID)))
//	e, err := election.NewWith(l, etcdsync.NewSource(client, "/elections/catalog"), opts...)
//
// WithLockOptions does not apply: configure l instead. Stop closes l.
func NewWith(l Locker, src Source, opts ...Option) (*Election, error) {
	if l == nil || src == nil {
		return nil, errors.New("election: NewWith: nil Locker or Source")
	}
	return newElection(l, src, "", buildOptions(opts)), nil
}

func buildOptions(opts []Option) options {
	o := options{rejoin: DefaultRejoinDelay, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

func newElection(l Locker, src Source, value string, o options) *Election {
	return &Election{src: src, key: l.Key(), value: value, lock: l, o: o, resign: make(chan chan error)}
}

// Campaign blocks until this candidate is the leader or ctx is done, and returns its fencing token.
func (e *Election) Campaign(ctx context.Context) (lock.Token, error) {
	tok, err := e.lock.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("election: campaign for %s: %w", e.key, err)
	}
	return tok, nil
}

// Lost returns a channel closed when the current leadership ends (see lock.Lock.Lost).
func (e *Election) Lost() <-chan struct{} { return e.lock.Lost() }

// IsLeader reports whether this candidate leads, with its token.
func (e *Election) IsLeader() (lock.Token, bool) { return e.lock.Token() }

// Resign steps down. With the Start loop running, the elected function is stopped first, then the
// key released, and the loop campaigns again after the rejoin delay; use Stop to leave for good.
// It returns ErrNotLeader when this candidate does not lead.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	looping := e.started && !e.stopped
	e.mu.Unlock()
	if !looping {
		err := e.lock.Release(ctx)
		if errors.Is(err, lock.ErrNotHeld) || errors.Is(err, lock.ErrLost) {
			return ErrNotLeader
		}
		return err
	}
	lost := e.lock.Lost()
	if _, ok := e.lock.Token(); !ok {
		return ErrNotLeader
	}
	reply := make(chan error, 1)
	select {
	case e.resign <- reply:
	case <-lost:
		return ErrNotLeader
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leader returns the current leader with a consistent read, or the zero Leader when nobody leads.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	l, _, err := e.src.Leader(ctx, 0)
	if err != nil {
		return Leader{}, fmt.Errorf("election: reading %s: %w", e.key, err)
	}
	return l, nil
}

// consulSource reads the leader from the election key with consistent (blocking) queries.
type consulSource struct {
	c   lock.Client
	key string
}

func (s consulSource) Leader(ctx context.Context, index uint64) (Leader, uint64, error) {
	p, meta, err := s.c.Get(ctx, s.key, &api.QueryOptions{RequireConsistent: true, WaitIndex: index, WaitTime: DefaultWaitTime})
	if err != nil {
		return Leader{}, 0, err
	}
	return leaderOf(p), meta.LastIndex, nil
}

func leaderOf(p *api.KVPair) Leader {
	if p == nil || p.Session == "" {
		return Leader{}
	}
	return Leader{Value: string(p.Value), Session: p.Session, Token: lock.Token(p.ModifyIndex)}
}

// Start launches the campaign loop; see WithOnElected and WithOnRevoked. It returns at once and
// fits a lifecycle start hook. It can be called once.
func (e *Election) Start(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.stopped {
		return ErrStarted
	}
	e.started = true
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		e.run(ctx)
	}()
	return nil
}

// Stop steps down and leaves the election: it ends the loop (the elected function's ctx is
// cancelled and Stop waits for it to return), releases the key and destroys the session, within
// ctx. Call it when draining, before the process stops serving, so a successor takes over at once.
// Stop also cleans up after Campaign without Start. It is idempotent.
func (e *Election) Stop(ctx context.Context) error {
	e.mu.Lock()
	e.stopped = true
	cancel, done := e.cancel, e.done
	e.mu.Unlock()
	var errs []error
	closeCtx := ctx
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			// The elected function ignores its ctx: release anyway, with a little time of its own, so
			// the service can stop and a successor start; the fencing token keeps late writes out.
			errs = append(errs, fmt.Errorf("election: stop %s: elected function still running: %w", e.key, ctx.Err()))
			var cancel context.CancelFunc
			closeCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), lock.DefaultCleanupTimeout)
			defer cancel()
		}
	}
	if err := e.lock.Close(closeCtx); err != nil {
		errs = append(errs, fmt.Errorf("election: %w", err))
	}
	return errors.Join(errs...)
}

func (e *Election) run(ctx context.Context) {
	for {
		tok, err := e.lock.Acquire(ctx)
		if err != nil {
			return // ctx cancelled by Stop, or the lock closed; Acquire retries everything else
		}
		e.o.logger.Info("election: elected", "key", e.key, "value", e.value, "token", uint64(tok))
		reply, cause := e.lead(ctx, tok)
		if reply != nil {
			reply <- nil
		}
		if e.o.onRevoked != nil {
			e.o.onRevoked(tok, cause)
		}
		e.o.logger.Info("election: leadership ended", "key", e.key, "token", uint64(tok), "cause", cause)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(cause, ErrResigned) && backoff.Sleep(ctx, e.o.rejoin) != nil {
			return
		}
	}
}

// lead runs the elected function until leadership ends, then stops it and, unless stopping,
// releases the key. It returns the Resign reply channel, if any, and why leadership ended.
func (e *Election) lead(ctx context.Context, tok lock.Token) (chan error, error) {
	lost := e.lock.Lost()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if e.o.onElected != nil {
			e.o.onElected(lctx, tok)
		}
	}()
	var cause error
	var reply chan error
	select {
	case <-lost:
		cause = e.lock.Err()
	case reply = <-e.resign:
		cause = ErrResigned
	case <-ctx.Done():
		cause = ErrStopped
	}
	cancel()
	<-done // the leader's work stops before the key is released
	if ctx.Err() != nil {
		return reply, ErrStopped // Stop releases the key through lock.Close
	}
	rctx, rcancel := context.WithTimeout(context.Background(), lock.DefaultCleanupTimeout)
	defer rcancel()
	if err := e.lock.Release(rctx); err != nil && !errors.Is(err, lock.ErrLost) {
		e.o.logger.Warn("election: release", "key", e.key, "error", err)
	}
	return reply, cause
}

// Observer follows the leader of an election through its Source: consistent blocking queries on
// Consul, linearizable reads and a watch on etcd. It has no goroutine and needs no Close. It is not
// safe for concurrent use.
type Observer struct {
	src      Source
	index    uint64
	last     Leader
	started  bool
	lastTime time.Time
	failures int
	backoff  backoff.Policy
}

// Observe returns an Observer of this election's key.
func (e *Election) Observe() *Observer { return NewSourceObserver(e.src) }

// NewObserver returns an Observer of the Consul key for processes that only watch the election.
func NewObserver(c lock.Client, key string) *Observer {
	return NewSourceObserver(consulSource{c: c, key: key})
}

// NewSourceObserver returns an Observer that reads the leader from src (another engine than
// Consul, such as etcdsync.NewSource).
func NewSourceObserver(src Source) *Observer {
	return &Observer{src: src, backoff: backoff.Policy{Base: lock.DefaultBackoffBase, Max: lock.DefaultBackoffMax}}
}

// Next returns the current leader on the first call, then blocks until a different leader (or
// none, the zero Leader) is seen. Errors are retried with backoff until ctx is done.
func (o *Observer) Next(ctx context.Context) (Leader, error) {
	for {
		if o.index != 0 && !o.lastTime.IsZero() {
			if err := backoff.Sleep(ctx, DefaultMinInterval-time.Since(o.lastTime)); err != nil {
				return Leader{}, err
			}
		}
		o.lastTime = time.Now()
		cur, index, err := o.src.Leader(ctx, o.index)
		if err != nil {
			if ctx.Err() != nil {
				return Leader{}, ctx.Err()
			}
			o.failures++
			o.index = 0
			if err := backoff.Sleep(ctx, o.backoff.Delay(o.failures)); err != nil {
				return Leader{}, err
			}
			continue
		}
		o.failures = 0
		switch {
		case index < o.index:
			o.index = 0
		case index == 0:
			o.index = 1
		default:
			o.index = index
		}
		if !o.started || cur.Session != o.last.Session || cur.Value != o.last.Value {
			o.started, o.last = true, cur
			return cur, nil
		}
	}
}
