package httpcache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/httpx/httpcache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// origin is an in-process server (no network, so it runs inside a synctest bubble) that counts
// requests and 304 answers.
type origin struct {
	hits, notModified atomic.Int64
	cc                string
	body              string
}

func (o *origin) RoundTrip(r *http.Request) (*http.Response, error) {
	o.hits.Add(1)
	rec := httptest.NewRecorder()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if o.cc != "" {
			w.Header().Set("Cache-Control", o.cc)
		}
		w.Header().Set("Vary", "Accept-Language")
		if httpx.NotModified(w, r, httpx.ETag([]byte(o.body))) {
			o.notModified.Add(1)
			return
		}
		io.WriteString(w, o.body)
	})
	h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.Header.Get("Cache-Status")
}

func TestFreshnessAndRevalidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &origin{cc: "max-age=60", body: "v1"}
		c := &http.Client{Transport: httpcache.New(o)}
		const u = "http://svc.test/items/1"
		if b, s := get(t, c, u); b != "v1" || !strings.Contains(s, "fwd=miss") {
			t.Fatalf("%q %q", b, s)
		}
		if b, s := get(t, c, u); b != "v1" || s != "chassis; hit" || o.hits.Load() != 1 {
			t.Fatalf("fresh entry not served from cache: %q %q hits=%d", b, s, o.hits.Load())
		}
		// A different Vary'd header value is a different variant.
		get(t, c, u, "Accept-Language", "fr")
		if o.hits.Load() != 2 {
			t.Fatalf("Vary ignored: hits=%d", o.hits.Load())
		}
		// The request may insist on revalidation.
		get(t, c, u, "Accept-Language", "fr", "Cache-Control", "no-cache")
		if o.notModified.Load() != 1 {
			t.Fatalf("request no-cache did not revalidate: 304s=%d", o.notModified.Load())
		}
		time.Sleep(61 * time.Second)
		if b, s := get(t, c, u, "Accept-Language", "fr"); b != "v1" || !strings.Contains(s, "fwd-status=304") || o.notModified.Load() != 2 {
			t.Fatalf("stale entry not revalidated with its ETag: %q %q 304s=%d", b, s, o.notModified.Load())
		}
		// Revalidation refreshed it: fresh again.
		before := o.hits.Load()
		get(t, c, u, "Accept-Language", "fr")
		if o.hits.Load() != before {
			t.Fatal("revalidated entry not fresh again")
		}
		// The content changed: stale entry, new body.
		time.Sleep(61 * time.Second)
		o.body = "v2"
		if b, _ := get(t, c, u, "Accept-Language", "fr"); b != "v2" {
			t.Fatalf("changed content: %q", b)
		}
		// A POST to the URL invalidates it.
		req, _ := http.NewRequest(http.MethodPost, u, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		before = o.hits.Load()
		get(t, c, u, "Accept-Language", "fr")
		if o.hits.Load() != before+1 {
			t.Fatal("POST did not invalidate the cached GET")
		}
	})
}

func TestDirectives(t *testing.T) {
	tests := []struct {
		cc         string
		auth       bool
		private    bool
		wantOrigin int64 // origin hits for two GETs
	}{
		{"no-store", false, false, 2},
		{"max-age=60", false, false, 1},
		{"private, max-age=60", false, false, 2},
		{"private, max-age=60", false, true, 1},
		{"max-age=60", true, false, 2},         // authorized request, shared cache
		{"public, max-age=60", true, false, 1}, // unless public
		{"s-maxage=60, max-age=0", false, false, 1},
		{"no-cache", false, false, 2}, // stored, but revalidated: origin sees both (second is a 304)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s auth=%v private=%v", tt.cc, tt.auth, tt.private), func(t *testing.T) {
			o := &origin{cc: tt.cc, body: "x"}
			c := &http.Client{Transport: httpcache.New(o, httpcache.WithPrivate(tt.private))}
			for range 2 {
				hdr := []string{}
				if tt.auth {
					hdr = []string{"Authorization", "Bearer t"}
				}
				if b, _ := get(t, c, "http://svc.test/a", hdr...); b != "x" {
					t.Fatalf("body %q", b)
				}
			}
			if got := o.hits.Load(); got != tt.wantOrigin {
				t.Fatalf("origin hit %d times, want %d", got, tt.wantOrigin)
			}
		})
	}
}

func TestBounded(t *testing.T) {
	o := &origin{cc: "max-age=600", body: strings.Repeat("b", 1000)}
	tr := httpcache.New(o, httpcache.WithMaxBytes(10_000), httpcache.WithMaxEntryBytes(2000))
	c := &http.Client{Transport: tr}
	for i := range 100 {
		get(t, c, fmt.Sprintf("http://svc.test/%d", i))
	}
	if tr.Size() > 10_000 || tr.Len() != 10 {
		t.Fatalf("size %d, len %d: want at most 10 kB in 10 entries", tr.Size(), tr.Len())
	}
	// The most recent entries survive.
	before := o.hits.Load()
	get(t, c, "http://svc.test/99")
	if o.hits.Load() != before {
		t.Fatal("most recent entry evicted")
	}
	// Bodies over the entry limit pass through whole and are not kept.
	o.body = strings.Repeat("L", 5000)
	if b, _ := get(t, c, "http://svc.test/large"); len(b) != 5000 {
		t.Fatalf("large body truncated to %d", len(b))
	}
	before = o.hits.Load()
	get(t, c, "http://svc.test/large")
	if o.hits.Load() != before+1 {
		t.Fatal("oversized body was cached")
	}
}

func Example() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, r, http.StatusOK, "hello", &httpx.CacheControl{MaxAge: time.Minute})
	}))
	defer origin.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: httpcache.New(tr)}
	for range 2 {
		resp, _ := client.Get(origin.URL)
		resp.Body.Close()
		fmt.Println(resp.Header.Get("Cache-Status"))
	}
	// Output:
	// chassis; fwd=miss
	// chassis; hit
}
