package guard

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// KeyFunc names the caller of a request for rate limiting. It returns "" when it cannot name the
// caller, so that the next KeyFunc in WithKeys is tried.
type KeyFunc func(r *http.Request) string

// KeyContext keys by a value that an earlier middleware put in the request context, typically the
// authenticated subject (auth.Subject). Use it only for verified values: the rate limiter must then
// run after the middleware that verifies them.
func KeyContext(f func(ctx context.Context) string) KeyFunc {
	return func(r *http.Request) string { return f(r.Context()) }
}

// KeyHeader keys by the raw value of a request header such as X-API-Key.
//
// Only use it for a header that something before the limiter has verified (an API gateway, or an
// authentication middleware placed earlier): a client that can invent values gets a fresh bucket
// with every new value.
func KeyHeader(name string) KeyFunc {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) string {
		if v := r.Header[name]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// KeyIP keys by the client address found by ips (see ClientIP). IPv6 clients are keyed by their
// /64 (or the prefix set with ClientIP.IPv6Prefix) because one host usually owns a whole /64 and
// could otherwise rotate addresses to escape its limit.
func KeyIP(ips *ClientIP) KeyFunc {
	return func(r *http.Request) string { return ips.Key(r) }
}

// ClientIP finds the address of the client that sent a request. Forwarding headers
// (Forwarded, then X-Forwarded-For) are believed only when the connection comes from a trusted
// proxy, and then only the entries those proxies appended: the list is read right to left and the
// first address that is not a trusted proxy is the client. Anything a client writes into the
// header itself is therefore ignored.
//
// The zero value trusts nobody and uses the connection's address. A ClientIP is safe for concurrent
// use once built; do not change it afterwards.
type ClientIP struct {
	// Trusted lists the networks of the proxies whose forwarding headers are believed.
	Trusted []netip.Prefix
	// IPv6Prefix is the prefix length under which IPv6 clients share one key (default 64; 128 keys
	// every address separately).
	IPv6Prefix int
}

// Addr returns the client address of r, or the zero Addr when RemoteAddr cannot be parsed.
func (c *ClientIP) Addr(r *http.Request) netip.Addr {
	addr, _ := c.find(r)
	return addr
}

// Key returns the rate-limiting key for the client of r: the textual address for IPv4, the
// masked prefix for IPv6, "" when there is no usable address.
func (c *ClientIP) Key(r *http.Request) string {
	addr, text := c.find(r)
	if !addr.IsValid() {
		return ""
	}
	if addr.Is4() {
		return text
	}
	bits := c.IPv6Prefix
	if bits <= 0 || bits > 128 {
		bits = 64
	}
	if bits == 128 {
		return text
	}
	p, _ := addr.Prefix(bits)
	return p.String()
}

// find returns the client address and, when it is IPv4 or v4-in-v6, its text without allocating
// where possible (a substring of RemoteAddr or of a header).
func (c *ClientIP) find(r *http.Request) (netip.Addr, string) {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, ""
	}
	peer = peer.Unmap()
	if peer.Zone() != "" {
		peer = peer.WithZone("")
		host = ""
	}
	if !c.trusted(peer) {
		return peer, textOf(peer, host)
	}
	if v := r.Header["Forwarded"]; len(v) > 0 {
		if a, text, ok := c.walk(v, forwardedFor); ok {
			return a, textOf(a, text)
		}
		return peer, textOf(peer, host)
	}
	if v := r.Header["X-Forwarded-For"]; len(v) > 0 {
		if a, text, ok := c.walk(v, xffEntry); ok {
			return a, textOf(a, text)
		}
	}
	return peer, textOf(peer, host)
}

func textOf(a netip.Addr, text string) string {
	if text == "" || a.Is4() && strings.Contains(text, ":") {
		return a.String()
	}
	return text
}

func (c *ClientIP) trusted(a netip.Addr) bool {
	for _, p := range c.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// walk reads the comma-separated entries of header values right to left and returns the first
// address that is not a trusted proxy. If every entry is trusted it returns the leftmost one. An
// unparseable entry stops the walk: what lies left of it cannot be trusted either.
func (c *ClientIP) walk(values []string, parse func(string) (netip.Addr, string, bool)) (netip.Addr, string, bool) {
	var last netip.Addr
	var lastText string
	for i := len(values) - 1; i >= 0; i-- {
		s := values[i]
		for s != "" {
			entry := s
			if j := strings.LastIndexByte(s, ','); j >= 0 {
				entry, s = s[j+1:], s[:j]
			} else {
				s = ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, text, ok := parse(entry)
			if !ok {
				return last, lastText, last.IsValid()
			}
			if !c.trusted(a) {
				return a, text, true
			}
			last, lastText = a, text
		}
	}
	return last, lastText, last.IsValid()
}

// xffEntry parses one X-Forwarded-For entry: an address, optionally with a port.
func xffEntry(s string) (netip.Addr, string, bool) {
	return parseNode(s)
}

// forwardedFor parses one RFC 7239 forwarded-element and returns its for= node.
func forwardedFor(elem string) (netip.Addr, string, bool) {
	for elem != "" {
		pair := elem
		if j := strings.IndexByte(elem, ';'); j >= 0 {
			pair, elem = elem[:j], elem[j+1:]
		} else {
			elem = ""
		}
		pair = strings.TrimSpace(pair)
		if len(pair) < 4 || !strings.EqualFold(pair[:4], "for=") {
			continue
		}
		v := pair[4:]
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return parseNode(v)
	}
	return netip.Addr{}, "", false
}

// parseNode parses "1.2.3.4", "1.2.3.4:80", "[2001:db8::1]", "[2001:db8::1]:80" or "2001:db8::1".
func parseNode(s string) (netip.Addr, string, bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, "", false
		}
		s = s[1:end]
	} else if strings.Count(s, ":") == 1 {
		s = s[:strings.IndexByte(s, ':')]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, "", false
	}
	if a.Is4In6() {
		a = a.Unmap()
		return a, "", true
	}
	return a, s, true
}

// Prefixes is a list of networks decoded from a comma-separated environment value such as
// "10.0.0.0/8, 192.168.1.7, fd00::/8". A bare address means a single host.
type Prefixes []netip.Prefix

// UnmarshalText implements encoding.TextUnmarshaler (and so decodes from envconfig).
func (p *Prefixes) UnmarshalText(text []byte) error {
	out := Prefixes{}
	for _, f := range strings.Split(string(text), ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			pf, err := netip.ParsePrefix(f)
			if err != nil {
				return fmt.Errorf("%q: not a CIDR network (use 10.0.0.0/8 or fd00::/8): %w", f, err)
			}
			out = append(out, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return fmt.Errorf("%q: not an IP address or CIDR network: %w", f, err)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	*p = out
	return nil
}

// String returns the comma-separated form that UnmarshalText reads.
func (p Prefixes) String() string {
	s := make([]string, len(p))
	for i, pf := range p {
		s[i] = pf.String()
	}
	return strings.Join(s, ",")
}
