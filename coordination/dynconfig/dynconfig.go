package dynconfig

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Sources of a value, in Setting.Source: package config's (env, file, default, unset) plus kv.
const (
	SourceKV      = "kv"
	SourceEnv     = "env"
	SourceFile    = "file"
	SourceDefault = "default"
	SourceUnset   = "unset"
)

// Sentinel errors.
var (
	// ErrStarted is returned by a second Start, and by Start after Stop.
	ErrStarted = errors.New("dynconfig: already started")
)

// Setting is one variable of the effective configuration, safe to print and serve: secrets are
// redacted as config.Dump redacts them.
type Setting struct {
	Name       string `json:"name"`
	Value      string `json:"value"`
	Source     string `json:"source"`           // kv, env, file, default or unset
	Key        string `json:"key,omitempty"`    // the KV key, when Source is kv
	File       string `json:"file,omitempty"`   // the file a NAME_FILE variable named
	Secret     bool   `json:"secret,omitempty"` // whether Value was redacted
	Reloadable bool   `json:"reloadable"`
}

// Snapshot is one immutable version of the effective configuration. Value must not be modified:
// every reader shares it.
type Snapshot[T any] struct {
	Value    *T
	Index    uint64    // the KV index it was built from; 0 before the first KV read
	Time     time.Time // when it was built
	Settings []Setting // every variable, in declaration order
	// Notices lists KV keys under the prefix that were ignored, each with the reason: a variable that
	// is not reloadable, or no variable of that name.
	Notices []string
}

// Change is delivered to subscribers after a new snapshot with different values was swapped in.
type Change[T any] struct {
	Old, New *Snapshot[T]
	Changed  []string // names of the variables whose value changed, in declaration order
}

// RejectedError is the last KV content that was rejected, and why. The previous configuration stays
// in effect until KV holds a valid one.
type RejectedError struct {
	Index uint64 // the rejected KV index
	Kept  uint64 // the index of the configuration still in effect
	Err   error  // a *config.Error listing every problem, or a key conflict
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("dynconfig: KV index %d rejected, keeping index %d: %v", e.Index, e.Kept, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Config is a configuration struct of type T loaded from the environment with package config, with
// the fields tagged `reload:"true"` overlaid from Consul KV keys under a prefix and kept up to date
// by a watch. KV key <prefix>/<VARIABLE> (the variable's environment name, any letter case) sets
// VARIABLE: a non-empty KV value wins over the environment, an empty or deleted key falls back to it.
//
// Every KV change is decoded and validated as a whole, by config.Load with the same tags as at
// start-up. A valid result is swapped in atomically and announced to subscribers; an invalid one is
// rejected: the previous value stays, the error is logged, counted (semconv.MetricConfigReloads,
// semconv.MetricConfigInvalid) and returned by Err and the Handler until KV is fixed. KV keys that
// name a variable that is not reloadable are not applied, and are reported as Notices.
//
// A Config is safe for concurrent use. Load is one atomic pointer read: read it on every use rather
// than caching the value. Start launches the watch goroutine; Stop ends it.
type Config[T any] struct {
	kv     KV
	prefix string // with a trailing slash
	o      options
	m      metrics
	vars   []variable
	names  map[string]int // variable name (key and alt) -> index in vars

	cur atomic.Pointer[Snapshot[T]]

	mu       sync.Mutex
	subs     map[int]func(Change[T])
	nextSub  int
	rejected *RejectedError
	watchErr error
	notices  []string
	started  bool
	cancel   context.CancelFunc
	done     chan struct{}
}

// New loads T from the environment and returns a Config over the KV prefix. It fails as config.Load
// does, with every problem listed, when the environment alone is invalid. Nothing is read from KV
// until Start.
func New[T any](kv KV, prefix string, opts ...Option) (*Config[T], error) {
	if kv == nil {
		return nil, errors.New("dynconfig: New: nil KV")
	}
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return nil, errors.New("dynconfig: New: empty prefix")
	}
	o := newOptions(opts)
	vars, err := catalog[T](o.envPrefix)
	if err != nil {
		return nil, err
	}
	c := &Config[T]{kv: kv, prefix: prefix + "/", o: o, vars: vars, names: map[string]int{}, subs: map[int]func(Change[T]){}}
	for i, v := range vars {
		c.names[v.key] = i
		if v.alt != "" {
			if _, ok := c.names[v.alt]; !ok {
				c.names[v.alt] = i
			}
		}
	}
	if c.m, err = newMetrics(o.Meters, c.prefix); err != nil {
		return nil, fmt.Errorf("dynconfig: metrics: %w", err)
	}
	snap, _, err := c.build(nil, 0)
	if err != nil {
		return nil, err
	}
	c.cur.Store(snap)
	return c, nil
}

// Load returns the current value. It never blocks; the value must not be modified.
func (c *Config[T]) Load() *T { return c.cur.Load().Value }

// Snapshot returns the current snapshot.
func (c *Config[T]) Snapshot() *Snapshot[T] { return c.cur.Load() }

// Err returns why the configuration in effect is not the newest KV content: a *RejectedError when
// KV holds an invalid configuration, and the last query error while Consul cannot be read (joined
// when both). It is nil when the newest KV content is in effect.
func (c *Config[T]) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rej error
	if c.rejected != nil {
		rej = c.rejected
	}
	return errors.Join(rej, c.watchErr)
}

// Subscribe registers fn to be called after each swap that changed at least one value, in the
// watch goroutine and in the order of changes: fn must return quickly (hand long work to your own
// goroutine). The returned function unsubscribes; after it returns, fn is not called again.
func (c *Config[T]) Subscribe(fn func(Change[T])) (unsubscribe func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextSub
	c.nextSub++
	c.subs[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs, id)
	}
}

// Start reads KV once (within ctx) and applies it, then watches the prefix in a goroutine until
// Stop. A failed first read does not fail Start: the environment's configuration stays in effect,
// Err reports the failure and the watch keeps trying with backoff. Start fits a lifecycle start
// hook; it can be called once.
func (c *Config[T]) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return ErrStarted
	}
	c.started = true
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	c.mu.Unlock()

	index, _ := c.poll(ctx, 0)
	go func() {
		defer close(c.done)
		c.watch(wctx, index)
	}()
	return nil
}

// Stop ends the watch and waits for its goroutine, or for ctx. The last configuration stays
// readable. Stop is idempotent and fits a lifecycle stop hook.
func (c *Config[T]) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dynconfig: stop: %w", ctx.Err())
	}
}

// poll runs one query at index (0: no wait) and applies its result. It returns the index for the
// next query (0 to start over).
func (c *Config[T]) poll(ctx context.Context, index uint64) (uint64, error) {
	q := &api.QueryOptions{WaitIndex: index, WaitTime: c.o.waitTime, RequireConsistent: c.o.consistent}
	pairs, meta, err := c.kv.List(ctx, c.prefix, q)
	if err != nil {
		if ctx.Err() == nil {
			c.m.watchError()
			c.o.Logger.Warn("dynconfig: reading KV; keeping the current configuration", "prefix", c.prefix, "error", err)
			c.mu.Lock()
			c.watchErr = fmt.Errorf("dynconfig: reading %s: %w", c.prefix, err)
			c.mu.Unlock()
		}
		return 0, err
	}
	c.mu.Lock()
	c.watchErr = nil
	c.mu.Unlock()
	next := meta.LastIndex
	switch {
	case next < index:
		// The index went backwards (a snapshot restore, a new cluster): apply what was read and
		// start the next query from scratch, as Consul documents.
		c.apply(pairs, next)
		return 0, nil
	case next == 0:
		next = 1
	}
	if index == 0 || next != index {
		c.apply(pairs, next)
	}
	return next, nil
}

// watch runs blocking queries until ctx ends: at least minInterval apart, with full-jitter backoff
// after errors.
func (c *Config[T]) watch(ctx context.Context, index uint64) {
	failures := 0
	last := time.Now()
	for {
		if err := backoff.Sleep(ctx, c.o.minInterval-time.Since(last)); err != nil {
			return
		}
		last = time.Now()
		next, err := c.poll(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if err := backoff.Sleep(ctx, c.o.backoff.Delay(failures)); err != nil {
				return
			}
			index = 0
			continue
		}
		failures = 0
		index = next
	}
}

// apply builds a snapshot from KV pairs and swaps it in, or records the rejection.
func (c *Config[T]) apply(pairs api.KVPairs, index uint64) {
	old := c.cur.Load()
	snap, changed, err := c.build(pairs, index)
	if err != nil {
		rej := &RejectedError{Index: index, Kept: old.Index, Err: err}
		c.mu.Lock()
		c.rejected = rej
		c.mu.Unlock()
		c.m.reload(semconv.OutcomeRejected)
		c.o.Logger.Error("dynconfig: invalid configuration in KV rejected; the previous configuration stays in effect",
			"prefix", c.prefix, "index", index, "kept_index", old.Index, "error", err)
		return
	}
	c.cur.Store(snap)
	c.mu.Lock()
	c.rejected = nil
	noticesChanged := !slices.Equal(c.notices, snap.Notices)
	c.notices = snap.Notices
	subs := make([]func(Change[T]), 0, len(c.subs))
	for _, id := range slices.Sorted(maps.Keys(c.subs)) {
		subs = append(subs, c.subs[id])
	}
	c.mu.Unlock()
	if noticesChanged {
		for _, n := range snap.Notices {
			c.o.Logger.Warn("dynconfig: KV key ignored", "prefix", c.prefix, "notice", n)
		}
	}
	if len(changed) == 0 {
		c.m.reload(semconv.OutcomeUnchanged)
		return
	}
	c.m.reload(semconv.OutcomeApplied)
	c.o.Logger.Info("dynconfig: configuration changed", "prefix", c.prefix, "index", index, "changed", changed)
	ch := Change[T]{Old: old, New: snap, Changed: changed}
	for _, fn := range subs {
		fn(ch)
	}
}

type kvValue struct{ key, value string }

// build decodes and validates the environment overlaid with pairs. It returns the snapshot, the
// variables whose value differs from the current one, and a *config.Error or key conflict.
func (c *Config[T]) build(pairs api.KVPairs, index uint64) (*Snapshot[T], []string, error) {
	overlay := map[int]kvValue{} // variable index -> KV value
	var notices []string
	var conflicts []error
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, c.prefix)
		if name == "" || strings.HasSuffix(name, "/") {
			continue // the prefix itself, or a folder
		}
		i, ok := c.names[strings.ToUpper(name)]
		switch {
		case !ok:
			notices = append(notices, fmt.Sprintf("KV key %q: this service has no variable %s; ignored", p.Key, strings.ToUpper(name)))
			continue
		case !c.vars[i].reloadable:
			notices = append(notices, fmt.Sprintf("KV key %q sets %s, which is not reloadable: not applied (set it in the environment and restart, or tag the field %s:\"true\")", p.Key, c.vars[i].key, ReloadTag))
			continue
		}
		if prev, dup := overlay[i]; dup {
			conflicts = append(conflicts, fmt.Errorf("KV keys %q and %q both set %s; delete one", prev.key, p.Key, c.vars[i].key))
			continue
		}
		overlay[i] = kvValue{key: p.Key, value: string(p.Value)}
	}
	if len(conflicts) > 0 {
		return nil, nil, errors.Join(conflicts...)
	}
	lookup := c.lookup(overlay)
	opts := []config.Option{config.WithLookup(lookup)}
	if c.o.envPrefix != "" {
		opts = append(opts, config.WithPrefix(c.o.envPrefix))
	}
	if c.o.readFile != nil {
		opts = append(opts, config.WithReadFile(c.o.readFile))
	}
	next := new(T)
	if err := config.Load(next, opts...); err != nil {
		return nil, nil, err
	}
	dump, err := config.Dump(next, opts...)
	if err != nil {
		return nil, nil, err
	}
	settings := make([]Setting, len(dump))
	for i, d := range dump {
		settings[i] = Setting{Name: d.Name, Value: d.Value, Source: d.Source, File: d.File, Secret: d.Secret, Reloadable: c.vars[i].reloadable}
		if kv, ok := overlay[i]; ok && kv.value != "" {
			settings[i].Source, settings[i].Key = SourceKV, kv.key
		}
	}
	snap := &Snapshot[T]{Value: next, Index: index, Time: time.Now(), Settings: settings, Notices: notices}
	var changed []string
	if old := c.cur.Load(); old != nil {
		changed = c.diff(old.Value, next)
	}
	return snap, changed, nil
}

// lookup overlays non-empty KV values on the environment. When KV sets NAME, NAME_FILE in the
// environment is hidden, or config would report both as set.
func (c *Config[T]) lookup(overlay map[int]kvValue) config.Lookup {
	env := c.o.lookup
	return func(name string) (string, bool) {
		if i, ok := c.names[name]; ok {
			if kv, ok := overlay[i]; ok && kv.value != "" {
				return kv.value, true
			}
		}
		if base, ok := strings.CutSuffix(name, "_FILE"); ok {
			if i, ok := c.names[base]; ok {
				if kv, ok := overlay[i]; ok && kv.value != "" {
					return "", false
				}
			}
		}
		return env(name)
	}
}

// diff compares the variables of two values with reflect.DeepEqual (secrets included, which a
// redacted dump could not do).
func (c *Config[T]) diff(a, b *T) []string {
	var av, bv []reflect.Value
	leaves(reflect.ValueOf(a), c.o.envPrefix, func(_ variable, v reflect.Value) { av = append(av, v) })
	leaves(reflect.ValueOf(b), c.o.envPrefix, func(_ variable, v reflect.Value) { bv = append(bv, v) })
	var out []string
	for i := range av {
		if !reflect.DeepEqual(av[i].Interface(), bv[i].Interface()) {
			out = append(out, c.vars[i].key)
		}
	}
	return out
}
