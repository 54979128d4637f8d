package dnstest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// SRV is one SRV record's data.
type SRV struct {
	Target   string
	Port     uint16
	Priority uint16
	Weight   uint16
}

type rrset struct {
	ttl   uint32
	srv   []SRV
	addrs []netip.Addr
}

// Server is a fake authoritative DNS server. All methods are safe for concurrent use. The zero value
// answers through Dial only; Start also listens on loopback.
type Server struct {
	mu           sync.Mutex
	zone         map[string]rrset // lower-cased fully qualified name
	negTTL       uint32
	rcode        dnsmessage.RCode
	drop         bool
	maxUDP       int
	noAdditional bool
	silentTrunc  bool
	queries      map[string]int // by network

	udp  net.PacketConn
	tcp  net.Listener
	quit chan struct{} // closed by Close
	wg   sync.WaitGroup
	once sync.Once
}

// Start listens on a free loopback port, UDP and TCP, and answers until Close.
func Start() (*Server, error) {
	s := &Server{quit: make(chan struct{})}
	var err error
	for range 20 {
		if s.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		if s.udp, err = net.ListenPacket("udp", s.tcp.Addr().String()); err == nil {
			break
		}
		_ = s.tcp.Close()
	}
	if err != nil {
		return nil, err
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// New is Start for tests: it fails the test on error and closes the server in t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Addr is the "127.0.0.1:port" the server listens on (UDP and TCP), "" for an in-memory server.
func (s *Server) Addr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// Close stops listening and waits for the server's goroutines. It is idempotent.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.tcp != nil {
			close(s.quit)
			_ = s.tcp.Close()
			_ = s.udp.Close()
		}
	})
	s.wg.Wait()
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

func (s *Server) set(name string, f func(*rrset)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.zone == nil {
		s.zone = map[string]rrset{}
	}
	rs := s.zone[fqdn(name)]
	f(&rs)
	s.zone[fqdn(name)] = rs
}

// SetSRV replaces name's SRV records. No targets makes the name exist without SRV records (an empty
// NOERROR answer); Remove makes it unknown (NXDOMAIN).
func (s *Server) SetSRV(name string, ttl uint32, targets ...SRV) {
	s.set(name, func(rs *rrset) { rs.ttl, rs.srv = ttl, append([]SRV{}, targets...) })
}

// SetAddrs replaces name's A and AAAA records.
func (s *Server) SetAddrs(name string, ttl uint32, addrs ...netip.Addr) {
	s.set(name, func(rs *rrset) { rs.ttl, rs.addrs = ttl, append([]netip.Addr{}, addrs...) })
}

// Remove deletes every record of name: it is then answered with NXDOMAIN.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.zone, fqdn(name))
}

// SetNegativeTTL sets the TTL and MINIMUM of the SOA record sent with empty answers (RFC 2308).
func (s *Server) SetNegativeTTL(ttl uint32) { s.mu.Lock(); s.negTTL = ttl; s.mu.Unlock() }

// Fail makes every answer carry rcode (dnsmessage.RCodeServerFailure, RCodeRefused, ...) and no
// records; RCodeSuccess restores normal answers.
func (s *Server) Fail(rcode dnsmessage.RCode) { s.mu.Lock(); s.rcode = rcode; s.mu.Unlock() }

// Drop makes the server read queries and answer none (a dead resolver: clients time out), or answer
// again.
func (s *Server) Drop(drop bool) { s.mu.Lock(); s.drop = drop; s.mu.Unlock() }

// SetMaxUDP sets the largest UDP answer; larger ones are sent truncated (TC set, no records). 0, the
// default, uses the size the query advertises with EDNS0, else 512.
func (s *Server) SetMaxUDP(n int) { s.mu.Lock(); s.maxUDP = n; s.mu.Unlock() }

// SetSilentTruncation makes over-long UDP answers drop records until they fit, without setting the
// TC bit, as Consul's DNS does by default (dns_config.enable_truncate = false).
func (s *Server) SetSilentTruncation(on bool) { s.mu.Lock(); s.silentTrunc = on; s.mu.Unlock() }

// SetAdditional sets whether SRV answers carry their targets' addresses in the additional section
// (the default, as Consul and Kubernetes do).
func (s *Server) SetAdditional(on bool) { s.mu.Lock(); s.noAdditional = !on; s.mu.Unlock() }

// Queries returns how many queries arrived over network ("udp" or "tcp"; "" for both).
func (s *Server) Queries(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if network == "" {
		return s.queries["udp"] + s.queries["tcp"]
	}
	return s.queries[network]
}

// Dial connects to the server in memory, for dns.WithDialer; addr is ignored. It works whether or
// not the server listens, and inside a testing/synctest bubble.
func (s *Server) Dial(_ context.Context, network, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	switch network {
	case "udp", "udp4", "udp6":
		go func() {
			defer server.Close()
			buf := make([]byte, 65535)
			for {
				n, err := server.Read(buf)
				if err != nil {
					return
				}
				if resp := s.Answer(buf[:n], "udp"); resp != nil {
					if _, err := server.Write(resp); err != nil {
						return
					}
				}
			}
		}()
	case "tcp", "tcp4", "tcp6":
		go func() {
			defer server.Close()
			s.serveStream(server)
		}()
	default:
		_ = client.Close()
		_ = server.Close()
		return nil, errors.New("dnstest: network " + network + " not supported")
	}
	return client, nil
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.Answer(buf[:n], "udp"); resp != nil {
			_, _ = s.udp.WriteTo(resp, from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			stop := make(chan struct{})
			defer close(stop)
			go func() { // Close ends the connection's read
				select {
				case <-stop:
				case <-s.quit:
					_ = c.Close()
				}
			}()
			s.serveStream(c)
		}()
	}
}

func (s *Server) serveStream(c net.Conn) {
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := s.Answer(q, "tcp")
		if resp == nil {
			continue
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}
