package guard_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/cloudchassis/kit/guard"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		remote  string
		headers map[string][]string
		trusted []netip.Prefix
		want    string
	}{
		{"direct", "192.0.2.1:5000", nil, trusted, "192.0.2.1"},
		{"untrusted peer's header ignored", "192.0.2.1:5000", map[string][]string{"X-Forwarded-For": {"203.0.113.9"}}, trusted, "192.0.2.1"},
		{"no trust configured", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"203.0.113.9"}}, nil, "10.0.0.1"},
		{"one proxy", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"203.0.113.9"}}, trusted, "203.0.113.9"},
		{"spoofed left entries ignored", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"1.1.1.1, 203.0.113.9, 10.0.0.2"}}, trusted, "203.0.113.9"},
		{"several header lines", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"1.1.1.1, 203.0.113.9", "10.0.0.3"}}, trusted, "203.0.113.9"},
		{"all trusted: leftmost", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"10.0.0.7, 10.0.0.2"}}, trusted, "10.0.0.7"},
		{"garbage stops the walk", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"203.0.113.9, bogus"}}, trusted, "10.0.0.1"},
		{"xff with port", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"203.0.113.9:4711"}}, trusted, "203.0.113.9"},
		{"forwarded wins", "10.0.0.1:5000", map[string][]string{
			"Forwarded":       {`for=198.51.100.17;proto=https, for="[fd00::1]:80"`},
			"X-Forwarded-For": {"203.0.113.9"}}, trusted, "198.51.100.17"},
		{"forwarded v6 client", "10.0.0.1:5000", map[string][]string{"Forwarded": {`For="[2001:db8:cafe::17]:4711"`}}, trusted, "2001:db8:cafe::/64"},
		{"forwarded obfuscated node", "10.0.0.1:5000", map[string][]string{"Forwarded": {`for=_hidden`}}, trusted, "10.0.0.1"},
		{"v6 peer keyed by /64", "[2001:db8:1:2:3:4:5:6]:443", nil, trusted, "2001:db8:1:2::/64"},
		{"v4-mapped peer", "[::ffff:192.0.2.4]:443", nil, trusted, "192.0.2.4"},
		{"v4-mapped forwarded", "10.0.0.1:5000", map[string][]string{"X-Forwarded-For": {"::ffff:203.0.113.9"}}, trusted, "203.0.113.9"},
		{"unparseable remote", "@", nil, trusted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			for k, v := range tt.headers {
				r.Header[k] = v
			}
			c := &guard.ClientIP{Trusted: tt.trusted}
			if got := c.Key(r); got != tt.want {
				t.Fatalf("Key = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClientIPKeyDoesNotAllocate(t *testing.T) {
	c := &guard.ClientIP{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:5000"
	r.Header.Set("X-Forwarded-For", "1.1.1.1, 203.0.113.9")
	if n := testing.AllocsPerRun(100, func() { _ = c.Key(r) }); n != 0 {
		t.Fatalf("%v allocations per IPv4 key, want 0", n)
	}
}

// FuzzClientIP checks that whatever a client writes into forwarding headers, the key is either the
// peer address or an address that appears in the header, and never panics.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"203.0.113.9", "1.1.1.1, 10.0.0.2", `for="[2001:db8::1]:80";proto=https`, "[::1", "for=", ",,,", "::ffff:1.2.3.4"} {
		f.Add(s, s)
	}
	c := &guard.ClientIP{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.9.9.9:1"
		r.Header["X-Forwarded-For"] = []string{xff}
		if fwd != "" {
			r.Header["Forwarded"] = []string{fwd}
		}
		a := c.Addr(r)
		if !a.IsValid() {
			t.Fatalf("no address for a request from a valid peer")
		}
		if key := c.Key(r); key == "" {
			t.Fatalf("empty key for %v", a)
		}
	})
}
