package dns

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The messages are built and parsed with golang.org/x/net/dns/dnsmessage rather than
// github.com/miekg/dns: x/net is already in the module graph (gRPC and the HTTP/2 stack need it), it is
// the parser the standard library vendors for its own resolver, and the few record types discovery
// needs (SRV, A, AAAA, SOA, OPT) are all it has to understand. miekg/dns would add a dependency for a
// client and a server this package does not need. net.Resolver cannot be used: it hides the TTLs.

// resolvConf is where the system's nameservers are listed.
const resolvConf = "/etc/resolv.conf"

// systemServers returns the nameservers of /etc/resolv.conf as host:53, or the loopback resolver
// when the file lists none (what the Go resolver assumes too).
func systemServers() []string {
	f, err := os.Open(resolvConf)
	if err != nil {
		return []string{"127.0.0.1:53"}
	}
	defer f.Close()
	if s := parseResolvConf(f); len(s) > 0 {
		return s
	}
	return []string{"127.0.0.1:53"}
}

// parseResolvConf returns the "nameserver" entries of a resolv.conf, as host:53.
func parseResolvConf(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		host, _, _ := strings.Cut(f[1], "%") // a zone of a link-local address is not dialable here
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, "53"))
		}
	}
	return out
}

// ErrServer is wrapped by the error of an answer whose code is neither success nor NXDOMAIN (SERVFAIL,
// REFUSED, ...): the server could not answer, which says nothing about the instances.
var ErrServer = errors.New("dns: server failure")

// udpFullSlack: a UDP answer within this many bytes of the advertised buffer is treated as possibly
// cut short (one SRV record with its address is under 100 bytes).
const udpFullSlack = 256

// client asks one question at a time of the configured servers.
type client struct {
	servers []string
	timeout time.Duration
	dial    Dialer
}

// ask sends q (one question, name fully qualified) to each server in turn until one answers, over
// UDP first and over TCP when the answer is truncated. An answer is any response whose code is
// success or NXDOMAIN; other codes are errors wrapping ErrServer.
func (c *client) ask(ctx context.Context, name dnsmessage.Name, typ dnsmessage.Type) (*dnsmessage.Message, error) {
	var errs []error
	for _, srv := range c.servers {
		m, err := c.exchange(ctx, srv, name, typ)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (c *client) exchange(ctx context.Context, server string, name dnsmessage.Name, typ dnsmessage.Type) (*dnsmessage.Message, error) {
	id := uint16(rand.Uint32())
	q, err := buildQuery(id, name, typ)
	if err != nil {
		return nil, err
	}
	m, err := c.roundTrip(ctx, "udp", server, q)
	if err == nil && m.Truncated {
		m, err = c.roundTrip(ctx, "tcp", server, q)
	}
	if err != nil {
		return nil, fmt.Errorf("dns: %s %s at %s: %w", strings.TrimPrefix(typ.String(), "Type"), name, server, err)
	}
	if err := checkAnswer(m, id, name, typ); err != nil {
		return nil, fmt.Errorf("dns: %s %s at %s: %w", strings.TrimPrefix(typ.String(), "Type"), name, server, err)
	}
	return m, nil
}

// roundTrip sends q and reads the reply. Over UDP, replies with another id (late answers to an
// earlier query, or forged ones) are skipped until the timeout.
func (c *client) roundTrip(ctx context.Context, network, server string, q []byte) (*dnsmessage.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The deadline ends the exchange at the timeout; closing the conn ends it when ctx is cancelled.
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	id := binary.BigEndian.Uint16(q)
	if network == "tcp" {
		return roundTripTCP(conn, q, id)
	}
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if n < 2 || binary.BigEndian.Uint16(buf) != id {
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			return nil, fmt.Errorf("malformed answer: %w", err)
		}
		if n > DefaultUDPSize-udpFullSlack {
			// Consul's DNS (dns_config.enable_truncate = false, its default) drops records until the
			// answer fits the advertised buffer without setting TC: an answer that fills the buffer
			// may be a silent subset, different on every refresh (Consul shuffles). Ask again over
			// TCP, which has no such limit.
			m.Truncated = true
		}
		return &m, nil
	}
}

func roundTripTCP(conn net.Conn, q []byte, id uint16) (*dnsmessage.Message, error) {
	msg := make([]byte, 2+len(q))
	binary.BigEndian.PutUint16(msg, uint16(len(q)))
	copy(msg[2:], q)
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("answer id %d does not match query id %d", m.ID, id)
	}
	return &m, nil
}

// buildQuery encodes a recursive query with an EDNS0 record advertising DefaultUDPSize.
func buildQuery(id uint16, name dnsmessage.Name, typ dnsmessage.Type) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		return nil, fmt.Errorf("dns: query %s: %w", name, err)
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(DefaultUDPSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	return msg, nil
}

// checkAnswer verifies that m answers the query (id, name, typ) and that its code is usable.
func checkAnswer(m *dnsmessage.Message, id uint16, name dnsmessage.Name, typ dnsmessage.Type) error {
	if !m.Response || m.ID != id {
		return errors.New("reply is not a response to the query")
	}
	if len(m.Questions) != 1 || m.Questions[0].Type != typ || !strings.EqualFold(m.Questions[0].Name.String(), name.String()) {
		return errors.New("reply answers another question")
	}
	switch m.RCode {
	case dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrServer, m.RCode)
}

// splitHostPort checks a "host:port" server address.
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("not host:port with a port in 1-65535")
	}
	return host, port, nil
}
