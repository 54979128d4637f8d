package discoverytest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Fake Consul identity, as reported in responses.
const (
	FakeNode       = "fake-consul"
	FakeDatacenter = "dc1"
	FakeLeader     = "127.0.0.1:8300"
)

// Route names for Consul.Requests.
const (
	RouteHealth  = "health"  // /v1/health/service/
	RouteAgent   = "agent"   // /v1/agent/...
	RouteKV      = "kv"      // /v1/kv/
	RouteSession = "session" // /v1/session/...
	RouteStatus  = "status"  // /v1/status/...
	RouteCatalog = "catalog" // /v1/catalog/...
	RouteOther   = "other"   // anything else (answered 404)
)

// Consul is a fake of the Consul HTTP API, enough for discovery/consul's Registrar and Registry and for
// KV-based coordination, with real blocking-query semantics (index, wait) and fault injection. It is an
// http.Handler: serve it with httptest.NewServer or with Server.
//
// Supported: PUT /v1/agent/service/register, PUT /v1/agent/service/deregister/<id>,
// GET /v1/agent/services, GET /v1/agent/service/<id>, GET /v1/agent/checks,
// PUT /v1/agent/check/{pass,warn,fail,update}/<id>, GET /v1/health/service/<name> (passing, tag, filter,
// index, wait, dc), GET /v1/catalog/services, GET /v1/status/{leader,peers}, GET|PUT|DELETE /v1/kv/<key>
// (recurse, keys, raw, cas, flags, acquire, release, index, wait) and /v1/session/{create,destroy,renew,
// info,list}. HTTP checks really probe their URL at their interval (2xx passing, 429 warning, otherwise
// critical); TTL checks expire; DeregisterCriticalServiceAfter removes services; session TTLs expire
// and release or delete their locks. Differences from Consul: one node and datacenter, no ACLs, no lock
// delay, filters support only the subset documented on parseFilter, and a KV blocking query wakes on
// any KV change (Consul allows such spurious wake-ups).
//
// A Consul is safe for concurrent use. Close stops its check goroutines and releases blocked queries;
// call it before closing the HTTP server that serves it.
type Consul struct {
	mu       sync.Mutex
	index    uint64
	epoch    int           // changes on ResetIndex: blocked queries return at once, as after a restore
	changed  chan struct{} // closed and replaced on every change
	closed   bool
	services map[string]*service // by service ID
	names    map[string]uint64   // service name -> index of its last change
	kv       map[string]*api.KVPair
	kvIndex  uint64
	sessions map[string]*session

	failStatus int
	latency    time.Duration
	requests   map[string]int

	blocked       int           // blocking queries waiting now
	blockedChange chan struct{} // closed and replaced when blocked changes

	probe *http.Client
	wg    sync.WaitGroup
}

type service struct {
	svc    api.AgentService
	checks []*check
}

type check struct {
	c          api.HealthCheck
	http       string
	interval   time.Duration
	timeout    time.Duration
	ttl        time.Duration
	deregAfter time.Duration
	deadline   time.Time // TTL expiry
	critical   time.Time // since when critical; zero if not
	stop       chan struct{}
	poke       chan struct{}
}

type session struct {
	s     api.SessionEntry
	ttl   time.Duration
	timer *time.Timer
}

// NewConsul returns an empty fake Consul whose raft index starts at 1.
func NewConsul() *Consul {
	return &Consul{
		index:    1,
		changed:  make(chan struct{}),
		services: map[string]*service{},
		names:    map[string]uint64{},
		kv:       map[string]*api.KVPair{},
		sessions: map[string]*session{},
		requests: map[string]int{},
		probe:    &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},

		blockedChange: make(chan struct{}),
	}
}

// Close stops the check goroutines and session timers, and makes blocked queries return. Requests
// after Close are answered 503. Close is idempotent.
func (c *Consul) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, s := range c.services {
		for _, ch := range s.checks {
			close(ch.stop)
		}
	}
	for _, s := range c.sessions {
		s.timer.Stop()
	}
	c.broadcast()
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// SetFailure makes every request fail with the HTTP status (for example 500, or 503 as a server
// without a leader answers); 0 stops it.
func (c *Consul) SetFailure(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failStatus = status
	c.broadcast() // fail blocked queries too
}

// SetLatency delays every request by d before it is handled; 0 stops it.
func (c *Consul) SetLatency(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latency = d
}

// ResetIndex sets the raft index back to 1, as after a snapshot restore, and makes blocked queries
// return at once. Clients must notice that the index went backwards.
func (c *Consul) ResetIndex() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index, c.kvIndex = 1, 1
	for n := range c.names {
		c.names[n] = 1
	}
	c.epoch++
	c.broadcast()
}

// Blocked returns how many blocking queries are waiting for a change right now.
func (c *Consul) Blocked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked
}

// WaitBlocked returns once at least n blocking queries are waiting for a change, or with ctx's error:
// the signal that a query the test started has reached the server and blocks, so that a change made
// next wakes it (instead of a sleep that a loaded machine can outlast).
func (c *Consul) WaitBlocked(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		blocked, ch := c.blocked, c.blockedChange
		c.mu.Unlock()
		if blocked >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("discoverytest: %d of %d blocking queries waiting: %w", blocked, n, ctx.Err())
		}
	}
}

// setBlocked adds delta to the count of waiting queries. c.mu must be held.
func (c *Consul) setBlocked(delta int) {
	c.blocked += delta
	close(c.blockedChange)
	c.blockedChange = make(chan struct{})
}

// Requests returns how many requests a route (RouteHealth, RouteAgent, ...) has received.
func (c *Consul) Requests(route string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests[route]
}

// Services returns the registered services by ID, with the status of their checks folded in: an
// instance's Status is "passing" only if all its checks pass.
func (c *Consul) Services() map[string]ServiceState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]ServiceState, len(c.services))
	for id, s := range c.services {
		out[id] = ServiceState{Service: s.svc, Status: aggregate(s.checks)}
	}
	return out
}

// ServiceState is a registered service and its aggregated check status.
type ServiceState struct {
	Service api.AgentService
	Status  string
}

// RemoveService removes a service as if its agent had lost it (a dev agent restarted), without any
// deregistration call.
func (c *Consul) RemoveService(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeService(id)
}

func aggregate(checks []*check) string {
	status := api.HealthPassing
	for _, ch := range checks {
		switch ch.c.Status {
		case api.HealthCritical:
			return api.HealthCritical
		case api.HealthWarning:
			status = api.HealthWarning
		}
	}
	return status
}

// bump advances the raft index. c.mu must be held.
func (c *Consul) bump() uint64 {
	c.index++
	c.broadcast()
	return c.index
}

func (c *Consul) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func route(path string) string {
	switch {
	case strings.HasPrefix(path, "/v1/health/"):
		return RouteHealth
	case strings.HasPrefix(path, "/v1/agent/"):
		return RouteAgent
	case strings.HasPrefix(path, "/v1/kv/"):
		return RouteKV
	case strings.HasPrefix(path, "/v1/session/"):
		return RouteSession
	case strings.HasPrefix(path, "/v1/status/"):
		return RouteStatus
	case strings.HasPrefix(path, "/v1/catalog/"):
		return RouteCatalog
	}
	return RouteOther
}

// ServeHTTP implements http.Handler.
func (c *Consul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	c.mu.Lock()
	c.requests[route(p)]++
	latency, fail, closed := c.latency, c.failStatus, c.closed
	c.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if closed {
		http.Error(w, "fake consul closed", http.StatusServiceUnavailable)
		return
	}
	if fail != 0 {
		http.Error(w, "injected failure", fail)
		return
	}
	switch {
	case p == "/v1/agent/service/register" && isWrite(r):
		c.register(w, r)
	case strings.HasPrefix(p, "/v1/agent/service/deregister/") && isWrite(r):
		c.deregister(w, strings.TrimPrefix(p, "/v1/agent/service/deregister/"))
	case p == "/v1/agent/services" && r.Method == http.MethodGet:
		c.agentServices(w)
	case strings.HasPrefix(p, "/v1/agent/service/") && r.Method == http.MethodGet:
		c.agentService(w, strings.TrimPrefix(p, "/v1/agent/service/"))
	case p == "/v1/agent/checks" && r.Method == http.MethodGet:
		c.agentChecks(w)
	case strings.HasPrefix(p, "/v1/agent/check/") && isWrite(r):
		c.updateCheck(w, r, strings.TrimPrefix(p, "/v1/agent/check/"))
	case strings.HasPrefix(p, "/v1/health/service/") && r.Method == http.MethodGet:
		c.health(w, r, strings.TrimPrefix(p, "/v1/health/service/"))
	case p == "/v1/catalog/services" && r.Method == http.MethodGet:
		c.catalogServices(w, r)
	case p == "/v1/status/leader":
		writeJSON(w, 0, FakeLeader)
	case p == "/v1/status/peers":
		writeJSON(w, 0, []string{FakeLeader})
	case strings.HasPrefix(p, "/v1/kv/"):
		c.kvHandle(w, r, strings.TrimPrefix(p, "/v1/kv/"))
	case strings.HasPrefix(p, "/v1/session/"):
		c.sessionHandle(w, r, strings.TrimPrefix(p, "/v1/session/"))
	default:
		http.Error(w, "fake consul: unsupported endpoint "+r.Method+" "+p, http.StatusNotFound)
	}
}

func isWrite(r *http.Request) bool { return r.Method == http.MethodPut || r.Method == http.MethodPost }

func writeJSON(w http.ResponseWriter, index uint64, v any) {
	w.Header().Set("Content-Type", "application/json")
	if index > 0 {
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		w.Header().Set("X-Consul-KnownLeader", "true")
		w.Header().Set("X-Consul-LastContact", "0")
	}
	_ = json.NewEncoder(w).Encode(v)
}

// block implements a blocking query: it waits until indexOf() is above the request's index, its wait
// time passes, the index is reset, or the request ends. It returns false if the query must fail.
func (c *Consul) block(r *http.Request, indexOf func() uint64) bool {
	q := r.URL.Query()
	want, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	if want == 0 {
		return true
	}
	wait := 5 * time.Minute
	if s := q.Get("wait"); s != "" {
		d, err := parseWait(s)
		if err != nil {
			return true
		}
		wait = min(d, 10*time.Minute)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	c.mu.Lock()
	epoch := c.epoch
	waiting := false
	defer func() {
		if waiting {
			c.mu.Lock()
			c.setBlocked(-1)
			c.mu.Unlock()
		}
	}()
	for indexOf() <= want && c.epoch == epoch && !c.closed && c.failStatus == 0 {
		if !waiting {
			waiting = true
			c.setBlocked(1)
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return true
		case <-r.Context().Done():
			return false
		}
		c.mu.Lock()
	}
	ok := !c.closed && c.failStatus == 0
	c.mu.Unlock()
	return ok
}

func parseWait(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

func (c *Consul) register(w http.ResponseWriter, r *http.Request) {
	var reg api.AgentServiceRegistration
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&reg); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if reg.Name == "" {
		http.Error(w, "Missing service name", http.StatusBadRequest)
		return
	}
	if reg.ID == "" {
		reg.ID = reg.Name
	}
	defs := slices.Clone(reg.Checks)
	if reg.Check != nil {
		defs = append([]*api.AgentServiceCheck{reg.Check}, defs...)
	}
	var checks []*check
	for i, d := range defs {
		ch, err := newCheck(reg, d, i, len(defs))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		checks = append(checks, ch)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		http.Error(w, "fake consul closed", http.StatusServiceUnavailable)
		return
	}
	if old := c.services[reg.ID]; old != nil {
		for _, ch := range old.checks {
			close(ch.stop)
		}
	}
	idx := c.bump()
	weights := api.AgentWeights{Passing: 1, Warning: 1}
	if reg.Weights != nil {
		weights = *reg.Weights
	}
	s := &service{svc: api.AgentService{
		ID: reg.ID, Service: reg.Name, Tags: reg.Tags, Meta: reg.Meta, Port: reg.Port, Address: reg.Address,
		Weights: weights, Datacenter: FakeDatacenter, CreateIndex: idx, ModifyIndex: idx,
	}, checks: checks}
	c.services[reg.ID] = s
	c.names[reg.Name] = idx
	for _, ch := range checks {
		ch.c.CreateIndex, ch.c.ModifyIndex = idx, idx
		c.wg.Add(1)
		go c.runCheck(s, ch)
	}
	w.WriteHeader(http.StatusOK)
}

func newCheck(reg api.AgentServiceRegistration, d *api.AgentServiceCheck, i, n int) (*check, error) {
	id := d.CheckID
	if id == "" {
		id = "service:" + reg.ID
		if n > 1 {
			id += ":" + strconv.Itoa(i+1)
		}
	}
	status := d.Status
	if status == "" {
		status = api.HealthCritical // Consul's initial status for a new check
	}
	ch := &check{
		c: api.HealthCheck{
			Node: FakeNode, CheckID: id, Name: cmp.Or(d.Name, "Service '"+reg.Name+"' check"), Status: status,
			ServiceID: reg.ID, ServiceName: reg.Name, ServiceTags: reg.Tags,
		},
		stop: make(chan struct{}),
		poke: make(chan struct{}, 1),
	}
	var err error
	parse := func(name, s string) time.Duration {
		if s == "" || err != nil {
			return 0
		}
		v, perr := time.ParseDuration(s)
		if perr != nil {
			err = fmt.Errorf("check %s: bad %s %q", id, name, s)
		}
		return v
	}
	ch.interval = parse("Interval", d.Interval)
	ch.timeout = parse("Timeout", d.Timeout)
	ch.ttl = parse("TTL", d.TTL)
	ch.deregAfter = parse("DeregisterCriticalServiceAfter", d.DeregisterCriticalServiceAfter)
	if err != nil {
		return nil, err
	}
	switch {
	case d.HTTP != "":
		if ch.interval <= 0 {
			return nil, fmt.Errorf("check %s: an HTTP check needs an Interval", id)
		}
		ch.http, ch.c.Type = d.HTTP, "http"
		if ch.timeout <= 0 {
			ch.timeout = 10 * time.Second
		}
	case ch.ttl > 0:
		ch.c.Type = "ttl"
		ch.deadline = time.Now().Add(ch.ttl)
	default:
		return nil, fmt.Errorf("check %s: the fake supports HTTP and TTL checks only", id)
	}
	if status == api.HealthCritical {
		ch.critical = time.Now()
	}
	return ch, nil
}

// runCheck probes an HTTP check at its interval, expires a TTL check, and removes the service once the
// check has been critical for DeregisterCriticalServiceAfter.
func (c *Consul) runCheck(s *service, ch *check) {
	defer c.wg.Done()
	// A check registered as passing is first probed after one interval, like Consul's; one that starts
	// critical is probed at once.
	next := time.Now()
	if ch.c.Status == api.HealthPassing {
		next = next.Add(ch.interval)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		if ch.http != "" && !now.Before(next) {
			status, output := c.probeHTTP(ch)
			c.setStatus(s, ch, status, output)
			next = time.Now().Add(ch.interval)
		}
		c.mu.Lock()
		if ch.ttl > 0 && !time.Now().Before(ch.deadline) && ch.c.Status != api.HealthCritical {
			c.setStatusLocked(s, ch, api.HealthCritical, "TTL expired")
		}
		wake := next
		if ch.ttl > 0 {
			wake = ch.deadline
			if !time.Now().Before(wake) {
				wake = time.Now().Add(time.Hour) // expired: only an update wakes it
			}
		}
		if ch.deregAfter > 0 && !ch.critical.IsZero() {
			at := ch.critical.Add(ch.deregAfter)
			if !time.Now().Before(at) {
				if c.services[s.svc.ID] == s {
					c.removeService(s.svc.ID)
				}
				c.mu.Unlock()
				return
			}
			if at.Before(wake) {
				wake = at
			}
		}
		c.mu.Unlock()
		timer.Reset(time.Until(wake))
		select {
		case <-ch.stop:
			return
		case <-ch.poke:
		case <-timer.C:
		}
	}
}

func (c *Consul) probeHTTP(ch *check) (status, output string) {
	ctx, cancel := context.WithTimeout(context.Background(), ch.timeout)
	defer cancel()
	go func() { // the probe ends when the check is removed, too
		select {
		case <-ch.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ch.http, nil)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	req.Header.Set("User-Agent", "Consul Health Check")
	resp, err := c.probe.Do(req)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	output = fmt.Sprintf("HTTP GET %s: %s Output: %s", ch.http, resp.Status, body)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return api.HealthPassing, output
	case resp.StatusCode == http.StatusTooManyRequests:
		return api.HealthWarning, output
	}
	return api.HealthCritical, output
}

func (c *Consul) setStatus(s *service, ch *check, status, output string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.services[s.svc.ID] != s {
		return
	}
	c.setStatusLocked(s, ch, status, output)
}

// setStatusLocked records a check result; a status change is a catalog change (new index). c.mu held.
func (c *Consul) setStatusLocked(s *service, ch *check, status, output string) {
	ch.c.Output = output
	if ch.c.Status == status {
		return
	}
	ch.c.Status = status
	if status == api.HealthCritical {
		ch.critical = time.Now()
	} else {
		ch.critical = time.Time{}
	}
	idx := c.bump()
	ch.c.ModifyIndex = idx
	c.names[s.svc.Service] = idx
}

// removeService deletes a service and stops its checks. c.mu must be held.
func (c *Consul) removeService(id string) bool {
	s := c.services[id]
	if s == nil {
		return false
	}
	delete(c.services, id)
	for _, ch := range s.checks {
		select {
		case <-ch.stop:
		default:
			close(ch.stop)
		}
	}
	c.names[s.svc.Service] = c.bump()
	return true
}

func (c *Consul) deregister(w http.ResponseWriter, id string) {
	c.mu.Lock()
	ok := c.removeService(id)
	c.mu.Unlock()
	if !ok {
		http.Error(w, "Unknown service ID "+strconv.Quote(id)+". Ensure that the service ID is passed, not the service name.", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (c *Consul) agentServices(w http.ResponseWriter) {
	c.mu.Lock()
	out := make(map[string]api.AgentService, len(c.services))
	for id, s := range c.services {
		out[id] = s.svc
	}
	c.mu.Unlock()
	writeJSON(w, 0, out)
}

func (c *Consul) agentService(w http.ResponseWriter, id string) {
	c.mu.Lock()
	s := c.services[id]
	var svc api.AgentService
	if s != nil {
		svc = s.svc
	}
	c.mu.Unlock()
	if s == nil {
		http.Error(w, "unknown service ID: "+id, http.StatusNotFound)
		return
	}
	writeJSON(w, 0, svc)
}

func (c *Consul) agentChecks(w http.ResponseWriter) {
	c.mu.Lock()
	out := map[string]api.HealthCheck{}
	for _, s := range c.services {
		for _, ch := range s.checks {
			out[ch.c.CheckID] = ch.c
		}
	}
	c.mu.Unlock()
	writeJSON(w, 0, out)
}

func (c *Consul) updateCheck(w http.ResponseWriter, r *http.Request, rest string) {
	verb, id, ok := strings.Cut(rest, "/")
	if !ok {
		http.Error(w, "missing check ID", http.StatusBadRequest)
		return
	}
	var status, output string
	switch verb {
	case "pass":
		status, output = api.HealthPassing, r.URL.Query().Get("note")
	case "warn":
		status, output = api.HealthWarning, r.URL.Query().Get("note")
	case "fail":
		status, output = api.HealthCritical, r.URL.Query().Get("note")
	case "update":
		var u struct{ Status, Output string }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&u); err != nil {
			http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
			return
		}
		status, output = u.Status, u.Output
		if status != api.HealthPassing && status != api.HealthWarning && status != api.HealthCritical {
			http.Error(w, "Invalid check status: "+strconv.Quote(status), http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "unsupported check operation "+verb, http.StatusNotFound)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.services {
		for _, ch := range s.checks {
			if ch.c.CheckID != id {
				continue
			}
			if ch.ttl <= 0 {
				http.Error(w, "CheckID "+strconv.Quote(id)+" does not have associated TTL", http.StatusBadRequest)
				return
			}
			ch.deadline = time.Now().Add(ch.ttl)
			c.setStatusLocked(s, ch, status, output)
			select {
			case ch.poke <- struct{}{}:
			default:
			}
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	http.Error(w, "Unknown check ID "+strconv.Quote(id), http.StatusNotFound)
}

func (c *Consul) health(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	if dc := q.Get("dc"); dc != "" && dc != FakeDatacenter {
		http.Error(w, "No path to datacenter", http.StatusInternalServerError)
		return
	}
	var filter filterExpr
	if f := q.Get("filter"); f != "" {
		var err error
		if filter, err = parseFilter(f); err != nil {
			http.Error(w, "Failed to create boolean expression evaluator: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	_, passingOnly := q["passing"]
	tags := q["tag"]
	if !c.block(r, func() uint64 { return max(c.names[name], 1) }) {
		http.Error(w, "blocking query aborted", http.StatusInternalServerError)
		return
	}
	c.mu.Lock()
	index := max(c.names[name], 1)
	out := []*api.ServiceEntry{}
	for _, s := range c.services {
		if s.svc.Service != name {
			continue
		}
		if passingOnly && aggregate(s.checks) != api.HealthPassing {
			continue
		}
		if !hasAll(s.svc.Tags, tags) {
			continue
		}
		if filter != nil && !filter.match(fields{
			id: s.svc.ID, service: s.svc.Service, address: s.svc.Address, node: FakeNode, port: s.svc.Port,
			tags: s.svc.Tags, meta: s.svc.Meta,
		}) {
			continue
		}
		svc := s.svc
		checks := api.HealthChecks{&api.HealthCheck{Node: FakeNode, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing}}
		for _, ch := range s.checks {
			hc := ch.c
			checks = append(checks, &hc)
		}
		out = append(out, &api.ServiceEntry{
			Node:    &api.Node{Node: FakeNode, Address: "127.0.0.1", Datacenter: FakeDatacenter},
			Service: &svc,
			Checks:  checks,
		})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b *api.ServiceEntry) int { return cmp.Compare(a.Service.ID, b.Service.ID) })
	writeJSON(w, index, out)
}

func (c *Consul) catalogServices(w http.ResponseWriter, r *http.Request) {
	if !c.block(r, func() uint64 { return c.index }) {
		http.Error(w, "blocking query aborted", http.StatusInternalServerError)
		return
	}
	c.mu.Lock()
	out := map[string][]string{}
	for _, s := range c.services {
		tags := append(out[s.svc.Service], s.svc.Tags...)
		slices.Sort(tags)
		out[s.svc.Service] = slices.Compact(tags)
		if out[s.svc.Service] == nil {
			out[s.svc.Service] = []string{}
		}
	}
	index := c.index
	c.mu.Unlock()
	writeJSON(w, index, out)
}

func hasAll(have, want []string) bool {
	for _, t := range want {
		if !slices.Contains(have, t) {
			return false
		}
	}
	return true
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// sortedKeys returns the KV keys, sorted. c.mu must be held.
func (c *Consul) sortedKeys() []string { return slices.Sorted(maps.Keys(c.kv)) }
