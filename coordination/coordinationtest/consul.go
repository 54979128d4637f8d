package coordinationtest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul's defaults that the fake reproduces.
const (
	// DefaultWaitTime is Consul's default for a blocking query without a wait.
	DefaultWaitTime = 5 * time.Minute
	// DefaultLockDelay is Consul's lock-delay for a session created without one.
	DefaultLockDelay = 15 * time.Second
)

// ErrInvalidSession is returned by Acquire and Release for a session that does not exist, as Consul
// answers 500 "invalid session".
var ErrInvalidSession = errors.New("coordinationtest: invalid session")

// Consul is an in-memory Consul KV store and session table. The zero value is not usable; call New.
// It is safe for concurrent use.
type Consul struct {
	mu       sync.Mutex
	index    uint64
	kv       map[string]*api.KVPair
	sessions map[string]*session
	delays   map[string]time.Time // key -> no acquire before
	changed  chan struct{}        // closed and replaced on every change
	err      error
	nextID   int
	queries  int
}

type session struct {
	entry   api.SessionEntry
	ttl     time.Duration
	expires time.Time // zero without a TTL
}

// New returns an empty store whose index starts at 1.
func New() *Consul {
	return &Consul{
		index:    1,
		kv:       map[string]*api.KVPair{},
		sessions: map[string]*session{},
		delays:   map[string]time.Time{},
		changed:  make(chan struct{}),
	}
}

// SetError makes every client call return err until SetError(nil); the direct helpers (Put,
// Delete, Pair, InvalidateSession) keep working.
func (c *Consul) SetError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// Queries returns how many Get and List calls have been made, blocking or not: a test uses it to show
// that a watcher does not spin.
func (c *Consul) Queries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queries
}

// Index returns the current raft index.
func (c *Consul) Index() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.index
}

// bump advances the index and wakes blocking queries. c.mu is held.
func (c *Consul) bump() uint64 {
	c.index++
	close(c.changed)
	c.changed = make(chan struct{})
	return c.index
}

// Put writes key, as `consul kv put` does, and returns the new index.
func (c *Consul) Put(key, value string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reap(time.Now())
	idx := c.bump()
	p := &api.KVPair{Key: key, Value: []byte(value), CreateIndex: idx, ModifyIndex: idx}
	if cur := c.kv[key]; cur != nil {
		p.CreateIndex, p.LockIndex, p.Session, p.Flags = cur.CreateIndex, cur.LockIndex, cur.Session, cur.Flags
	}
	c.kv[key] = p
	return idx
}

// Delete removes key, as `consul kv delete` does; deleting a held lock key is how an operator breaks a
// lock.
func (c *Consul) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reap(time.Now())
	if _, ok := c.kv[key]; ok {
		delete(c.kv, key)
		c.bump()
	}
}

// Pair returns a copy of key's entry, or nil.
func (c *Consul) Pair(key string) *api.KVPair {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reap(time.Now())
	return copyPair(c.kv[key])
}

// Sessions returns the IDs of live sessions, sorted.
func (c *Consul) Sessions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reap(time.Now())
	return slices.Sorted(maps.Keys(c.sessions))
}

// InvalidateSession ends a session as a failed health check or an expired TTL would: its locks are
// released (or deleted, with behavior delete) and lock-delay applies. It reports whether the session
// existed.
func (c *Consul) InvalidateSession(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.invalidate(id, time.Now())
}

func (c *Consul) invalidate(id string, now time.Time) bool {
	s, ok := c.sessions[id]
	if !ok {
		return false
	}
	delete(c.sessions, id)
	delay := s.entry.LockDelay
	if delay == 0 {
		delay = DefaultLockDelay
	}
	for _, k := range slices.Sorted(maps.Keys(c.kv)) {
		p := c.kv[k]
		if p.Session != id {
			continue
		}
		c.delays[k] = now.Add(delay)
		if s.entry.Behavior == api.SessionBehaviorDelete {
			delete(c.kv, k)
			continue
		}
		p.Session = ""
		p.ModifyIndex = c.index + 1
	}
	c.bump()
	return true
}

// reap invalidates sessions whose TTL has run out. c.mu is held.
func (c *Consul) reap(now time.Time) {
	for id, s := range c.sessions {
		if !s.expires.IsZero() && !now.Before(s.expires) {
			c.invalidate(id, now)
		}
	}
}

// nextExpiry returns the earliest session expiry, or zero. c.mu is held.
func (c *Consul) nextExpiry() time.Time {
	var t time.Time
	for _, s := range c.sessions {
		if !s.expires.IsZero() && (t.IsZero() || s.expires.Before(t)) {
			t = s.expires
		}
	}
	return t
}

// call takes the lock, reaps and returns the injected error, if any. The caller unlocks.
func (c *Consul) call(ctx context.Context) error {
	c.mu.Lock()
	if err := ctx.Err(); err != nil {
		return err
	}
	c.reap(time.Now())
	return c.err
}

// sessionCall is call for Acquire and Release: p's session must exist. It returns the key's
// current pair. c.mu is held on return, as after call.
func (c *Consul) sessionCall(ctx context.Context, p *api.KVPair) (*api.KVPair, error) {
	if err := c.call(ctx); err != nil {
		return nil, err
	}
	if _, ok := c.sessions[p.Session]; !ok {
		return nil, ErrInvalidSession
	}
	return c.kv[p.Key], nil
}

// CreateSession implements lock.Client. TTL must be between 10s and 24h, as Consul requires.
func (c *Consul) CreateSession(ctx context.Context, se *api.SessionEntry) (string, error) {
	err := c.call(ctx)
	defer c.mu.Unlock()
	if err != nil {
		return "", err
	}
	s := &session{}
	if se != nil {
		s.entry = *se
	}
	if s.entry.Behavior == "" {
		s.entry.Behavior = api.SessionBehaviorRelease
	}
	if s.entry.TTL != "" {
		ttl, err := time.ParseDuration(s.entry.TTL)
		if err != nil || ttl < 10*time.Second || ttl > 24*time.Hour {
			return "", errors.New("coordinationtest: Invalid Session TTL '" + s.entry.TTL + "', must be between [10s=24h0m0s]")
		}
		s.ttl = ttl
		s.expires = time.Now().Add(ttl)
	}
	c.nextID++
	id := "session-" + strconv.Itoa(c.nextID)
	s.entry.ID = id
	s.entry.CreateIndex = c.bump()
	c.sessions[id] = s
	return id, nil
}

// RenewSession implements lock.Client: a nil entry and no error mean the session does not exist.
func (c *Consul) RenewSession(ctx context.Context, id string) (*api.SessionEntry, error) {
	err := c.call(ctx)
	defer c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s, ok := c.sessions[id]
	if !ok {
		return nil, nil
	}
	if s.ttl > 0 {
		s.expires = time.Now().Add(s.ttl)
	}
	e := s.entry
	return &e, nil
}

// DestroySession implements lock.Client. Destroying an unknown session is not an error.
func (c *Consul) DestroySession(ctx context.Context, id string) error {
	err := c.call(ctx)
	defer c.mu.Unlock()
	if err != nil {
		return err
	}
	c.invalidate(id, time.Now())
	return nil
}

// Acquire implements lock.Client with Consul's rules: the session must exist; a key held by another
// session, or within lock-delay, is refused; re-acquiring by the holder updates the value.
func (c *Consul) Acquire(ctx context.Context, p *api.KVPair) (bool, error) {
	cur, err := c.sessionCall(ctx, p)
	defer c.mu.Unlock()
	if err != nil {
		return false, err
	}
	if cur != nil && cur.Session != "" && cur.Session != p.Session {
		return false, nil
	}
	if (cur == nil || cur.Session != p.Session) && time.Now().Before(c.delays[p.Key]) {
		return false, nil
	}
	idx := c.bump()
	n := &api.KVPair{Key: p.Key, Value: slices.Clone(p.Value), Flags: p.Flags, Session: p.Session, CreateIndex: idx, ModifyIndex: idx, LockIndex: 1}
	if cur != nil {
		n.CreateIndex, n.LockIndex = cur.CreateIndex, cur.LockIndex
		if cur.Session != p.Session {
			n.LockIndex++
		}
	}
	c.kv[p.Key] = n
	return true, nil
}

// Release implements lock.Client: it succeeds only for the holding session, and writes p.Value.
func (c *Consul) Release(ctx context.Context, p *api.KVPair) (bool, error) {
	cur, err := c.sessionCall(ctx, p)
	defer c.mu.Unlock()
	if err != nil {
		return false, err
	}
	if cur == nil || cur.Session != p.Session {
		return false, nil
	}
	cur.Session = ""
	cur.Value = slices.Clone(p.Value)
	cur.ModifyIndex = c.bump()
	return true, nil
}

// Get implements lock.Client: a blocking query when q.WaitIndex is set.
func (c *Consul) Get(ctx context.Context, key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	var out *api.KVPair
	meta, err := c.query(ctx, q, func() { out = copyPair(c.kv[key]) })
	return out, meta, err
}

// List implements dynconfig.KV: every pair whose key starts with prefix, sorted by key.
func (c *Consul) List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	var out api.KVPairs
	meta, err := c.query(ctx, q, func() {
		for _, k := range slices.Sorted(maps.Keys(c.kv)) {
			if strings.HasPrefix(k, prefix) {
				out = append(out, copyPair(c.kv[k]))
			}
		}
	})
	return out, meta, err
}

// query waits while the index is at most q.WaitIndex (up to the wait time), then runs read under the
// lock. Session expiry during the wait is noticed at the expiry time, as Consul's timers do.
func (c *Consul) query(ctx context.Context, q *api.QueryOptions, read func()) (*api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	if err := c.call(ctx); err != nil {
		c.queries++
		c.mu.Unlock()
		return nil, err
	}
	c.queries++
	if q.WaitIndex > 0 && c.index <= q.WaitIndex {
		wait := q.WaitTime
		if wait <= 0 {
			wait = DefaultWaitTime
		}
		timeout := time.NewTimer(wait)
		defer timeout.Stop()
		for timedOut := false; !timedOut && c.index <= q.WaitIndex; {
			changed := c.changed
			expiry := time.NewTimer(DefaultWaitTime)
			if t := c.nextExpiry(); !t.IsZero() {
				expiry.Reset(time.Until(t))
			}
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				expiry.Stop()
				return nil, ctx.Err()
			case <-timeout.C:
				timedOut = true
			case <-changed:
			case <-expiry.C:
			}
			expiry.Stop()
			c.mu.Lock()
			c.reap(time.Now())
			if c.err != nil {
				err := c.err
				c.mu.Unlock()
				return nil, err
			}
		}
	}
	defer c.mu.Unlock()
	read()
	return &api.QueryMeta{LastIndex: c.index, KnownLeader: true}, nil
}

func copyPair(p *api.KVPair) *api.KVPair {
	if p == nil {
		return nil
	}
	n := *p
	n.Value = slices.Clone(p.Value)
	return &n
}
