package httpcache

import (
	"bytes"
	"container/list"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultMaxBytes      = 32 << 20 // total body bytes kept
	DefaultMaxEntryBytes = 1 << 20  // larger responses pass through uncached
)

// Option configures a Transport.
type Option interface{ apply(*Transport) }

type optionFunc func(*Transport)

func (f optionFunc) apply(o *Transport) { f(o) }

// WithMaxBytes bounds the total size of cached bodies (default DefaultMaxBytes).
func WithMaxBytes(n int64) Option {
	return optionFunc(func(t *Transport) {
		if n > 0 {
			t.maxBytes = n
		}
	})
}

// WithMaxEntryBytes bounds one cached body (default DefaultMaxEntryBytes).
func WithMaxEntryBytes(n int64) Option {
	return optionFunc(func(t *Transport) {
		if n > 0 {
			t.maxEntry = n
		}
	})
}

// WithPrivate makes the cache a private (single-user) cache: it then also stores responses marked
// private and responses to authorized requests.
func WithPrivate(private bool) Option { return optionFunc(func(t *Transport) { t.private = private }) }

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(t *Transport) {
		if now != nil {
			t.now = now
		}
	})
}

// Transport is a caching http.RoundTripper. It is safe for concurrent use.
type Transport struct {
	next     http.RoundTripper
	now      func() time.Time
	maxBytes int64
	maxEntry int64
	private  bool

	mu    sync.Mutex
	lru   *list.List // of *entry, most recent first
	items map[string]*list.Element
	size  int64
}

// New returns a Transport that caches in front of next (http.DefaultTransport when nil).
func New(next http.RoundTripper, opts ...Option) *Transport {
	if next == nil {
		next = http.DefaultTransport
	}
	t := &Transport{next: next, now: time.Now, maxBytes: DefaultMaxBytes, maxEntry: DefaultMaxEntryBytes,
		lru: list.New(), items: map[string]*list.Element{}}
	for _, o := range opts {
		o.apply(t)
	}
	return t
}

// Len returns the number of cached responses; Size their total body bytes.
func (t *Transport) Len() int { t.mu.Lock(); defer t.mu.Unlock(); return t.lru.Len() }

// Size returns the total bytes of cached bodies.
func (t *Transport) Size() int64 { t.mu.Lock(); defer t.mu.Unlock(); return t.size }

type entry struct {
	key      string
	status   int
	header   http.Header
	body     []byte
	received time.Time     // when the response (or its last revalidation) arrived
	ageAt    time.Duration // Age header at that moment
	fresh    time.Duration // freshness lifetime
	noCache  bool          // must revalidate before every use
	vary     map[string]string
}

// CacheStatus header values (RFC 9211) set on responses the Transport returns.
const (
	statusHeader = "Cache-Status"
	hit          = "chassis; hit"
	revalidated  = "chassis; fwd=stale; fwd-status=304"
	miss         = "chassis; fwd=miss"
	bypass       = "chassis; fwd=bypass"
)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet {
		resp, err := t.next.RoundTrip(req)
		if err == nil && unsafeMethod(req.Method) && resp.StatusCode < 400 {
			t.remove(key(req)) // RFC 9111 §4.4: a successful unsafe request invalidates the URL
		}
		return resp, err
	}
	rcc := parseCC(req.Header.Values("Cache-Control"))
	if _, ok := rcc["no-store"]; ok {
		return t.forward(req, bypass)
	}
	k := key(req)
	e := t.get(k, req)
	now := t.now()
	if e != nil && !e.noCache && !has(rcc, "no-cache") && e.age(now) < e.fresh && withinMaxAge(rcc, e.age(now)) {
		return e.response(req, now, hit), nil
	}
	out := req
	if e != nil && req.Header.Get("If-None-Match") == "" && req.Header.Get("If-Modified-Since") == "" {
		if et := e.header.Get("ETag"); et != "" || e.header.Get("Last-Modified") != "" {
			out = req.Clone(req.Context())
			if et != "" {
				out.Header.Set("If-None-Match", et)
			}
			if lm := e.header.Get("Last-Modified"); lm != "" {
				out.Header.Set("If-Modified-Since", lm)
			}
		}
	}
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotModified && e != nil && out != req {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		ne := t.refresh(e, resp.Header, t.now())
		return ne.response(req, t.now(), revalidated), nil
	}
	return t.store(k, req, resp)
}

func (t *Transport) forward(req *http.Request, status string) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		resp.Header.Set(statusHeader, status)
	}
	return resp, err
}

func unsafeMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch || m == http.MethodDelete
}

// key identifies a cached response by URL; Vary is checked separately.
func key(req *http.Request) string { return req.URL.String() }

func (t *Transport) get(k string, req *http.Request) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.items[k]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	for name, v := range e.vary {
		if strings.Join(req.Header.Values(name), ",") != v {
			return nil
		}
	}
	t.lru.MoveToFront(el)
	return e
}

func (t *Transport) remove(k string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.items[k]; ok {
		t.drop(el)
	}
}

func (t *Transport) drop(el *list.Element) {
	e := t.lru.Remove(el).(*entry)
	delete(t.items, e.key)
	t.size -= int64(len(e.body))
}

func (t *Transport) put(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.items[e.key]; ok {
		t.drop(el)
	}
	for t.size+int64(len(e.body)) > t.maxBytes && t.lru.Len() > 0 {
		t.drop(t.lru.Back())
	}
	t.items[e.key] = t.lru.PushFront(e)
	t.size += int64(len(e.body))
}

// refresh applies a 304's headers to a stored entry (RFC 9111 §4.3.4) and stores the result as a
// new entry value (entries are immutable once shared).
func (t *Transport) refresh(e *entry, h http.Header, now time.Time) *entry {
	ne := *e
	ne.header = e.header.Clone()
	for k, v := range h {
		if k == "Content-Length" {
			continue
		}
		ne.header[k] = v
	}
	ne.received = now
	ne.ageAt = ageHeader(ne.header)
	ne.fresh, ne.noCache = t.freshness(ne.header, now)
	t.put(&ne)
	return &ne
}

var cacheableStatus = map[int]bool{200: true, 203: true, 204: true, 300: true, 301: true, 404: true, 410: true}

func (t *Transport) store(k string, req *http.Request, resp *http.Response) (*http.Response, error) {
	cc := parseCC(resp.Header.Values("Cache-Control"))
	now := t.now()
	fresh, noCache := t.freshness(resp.Header, now)
	hasValidator := resp.Header.Get("ETag") != "" || resp.Header.Get("Last-Modified") != ""
	ok := cacheableStatus[resp.StatusCode] && !has(cc, "no-store") && (fresh > 0 || hasValidator) &&
		resp.Header.Get("Vary") != "*" && !has(parseCC(req.Header.Values("Cache-Control")), "no-store")
	if !t.private {
		// A shared cache keeps neither private responses nor answers to authorized requests
		// unless the origin said they may be shared (RFC 9111 §3.5).
		if has(cc, "private") {
			ok = false
		}
		if req.Header.Get("Authorization") != "" && !has(cc, "public") && !has(cc, "s-maxage") && !has(cc, "must-revalidate") {
			ok = false
		}
	}
	if !ok || resp.ContentLength > t.maxEntry {
		resp.Header.Set(statusHeader, miss+"; stored=false")
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, t.maxEntry+1))
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	if int64(len(body)) > t.maxEntry {
		// Too large to keep: hand back what was read followed by the rest.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		resp.Header.Set(statusHeader, miss+"; stored=false")
		return resp, nil
	}
	resp.Body.Close()
	e := &entry{
		key: k, status: resp.StatusCode, header: resp.Header.Clone(), body: body,
		received: now, ageAt: ageHeader(resp.Header), fresh: fresh, noCache: noCache,
	}
	if v := resp.Header.Values("Vary"); len(v) > 0 {
		e.vary = map[string]string{}
		for _, line := range v {
			for _, name := range strings.Split(line, ",") {
				if name = http.CanonicalHeaderKey(strings.TrimSpace(name)); name != "" {
					e.vary[name] = strings.Join(req.Header.Values(name), ",")
				}
			}
		}
	}
	t.put(e)
	return e.response(req, now, miss), nil
}

// freshness returns the freshness lifetime (s-maxage for a shared cache, then max-age, then
// Expires minus Date) and whether every use needs revalidation (no-cache). Without explicit
// information the lifetime is 0: the entry is kept for revalidation only (no heuristics).
func (t *Transport) freshness(h http.Header, now time.Time) (time.Duration, bool) {
	cc := parseCC(h.Values("Cache-Control"))
	noCache := has(cc, "no-cache")
	if !t.private {
		if v, ok := seconds(cc, "s-maxage"); ok {
			return v, noCache
		}
	}
	if v, ok := seconds(cc, "max-age"); ok {
		return v, noCache
	}
	if exp := h.Get("Expires"); exp != "" {
		e, err := http.ParseTime(exp)
		if err != nil {
			return 0, noCache // an invalid Expires means "already expired"
		}
		date := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			date = d
		}
		return max(0, e.Sub(date)), noCache
	}
	return 0, noCache
}

func (e *entry) age(now time.Time) time.Duration { return e.ageAt + max(0, now.Sub(e.received)) }

func (e *entry) response(req *http.Request, now time.Time, status string) *http.Response {
	h := e.header.Clone()
	h.Set("Age", strconv.FormatInt(int64(e.age(now)/time.Second), 10))
	h.Set(statusHeader, status)
	return &http.Response{
		Status:        strconv.Itoa(e.status) + " " + http.StatusText(e.status),
		StatusCode:    e.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(e.body)),
		ContentLength: int64(len(e.body)),
		Request:       req,
	}
}

func ageHeader(h http.Header) time.Duration {
	n, err := strconv.ParseInt(h.Get("Age"), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func withinMaxAge(rcc map[string]string, age time.Duration) bool {
	v, ok := seconds(rcc, "max-age")
	return !ok || age <= v
}

// parseCC parses Cache-Control directives into lower-case names and unquoted values.
func parseCC(values []string) map[string]string {
	if len(values) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, line := range values {
		for _, d := range strings.Split(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" {
				out[name] = strings.Trim(strings.TrimSpace(val), `"`)
			}
		}
	}
	return out
}

func has(cc map[string]string, name string) bool { _, ok := cc[name]; return ok }

func seconds(cc map[string]string, name string) (time.Duration, bool) {
	v, ok := cc[name]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, true // malformed: treat as stale (RFC 9111 §4.2.1)
	}
	return time.Duration(min(n, 1<<31)) * time.Second, true
}
