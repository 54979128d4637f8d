package dns

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// udpServer answers every query with the replies reply makes of it, in order.
func udpServer(t *testing.T, reply func(q []byte) [][]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, r := range reply(append([]byte(nil), buf[:n]...)) {
				_, _ = pc.WriteTo(r, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// answerTo builds a reply to q with one A record, with the given id.
func answerTo(t *testing.T, q []byte, id uint16) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil {
		t.Error(err)
		return nil
	}
	m.ID, m.Response = id, true
	m.Additionals = nil
	m.Answers = []dnsmessage.Resource{{
		Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 9},
		Body:   &dnsmessage.AResource{A: [4]byte{10, 9, 9, 9}},
	}}
	b, err := m.Pack()
	if err != nil {
		t.Error(err)
	}
	return b
}

// Replies with another id (late or forged) and garbage are skipped: the client waits for the reply
// to its own query.
func TestExchangeSkipsRepliesToOtherQueries(t *testing.T) {
	addr := udpServer(t, func(q []byte) [][]byte {
		id := binary.BigEndian.Uint16(q)
		return [][]byte{answerTo(t, q, id+1), {0x01}, answerTo(t, q, id)}
	})
	c := &client{servers: []string{addr}, timeout: 2 * time.Second, dial: (&net.Dialer{}).DialContext}
	m, err := c.ask(t.Context(), dnsmessage.MustNewName("x.test."), dnsmessage.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if a, ttl := addressAnswer(m); len(a) != 1 || a[0].addr.String() != "10.9.9.9" || ttl != 9 {
		t.Fatalf("%v %d", a, ttl)
	}
}

// A reply with the right id to another question is an error, as is a reply that does not parse.
func TestExchangeRejectsWrongAnswers(t *testing.T) {
	for name, reply := range map[string]func(t *testing.T, q []byte) []byte{
		"other question": func(t *testing.T, q []byte) []byte {
			var m dnsmessage.Message
			_ = m.Unpack(answerTo(t, q, binary.BigEndian.Uint16(q)))
			m.Questions[0].Name = dnsmessage.MustNewName("y.test.")
			b, _ := m.Pack()
			return b
		},
		"malformed":      func(t *testing.T, q []byte) []byte { return append(q[:2:2], 0x80, 0, 0, 1, 0, 0) },
		"not a response": func(t *testing.T, q []byte) []byte { return q },
	} {
		t.Run(name, func(t *testing.T) {
			addr := udpServer(t, func(q []byte) [][]byte { return [][]byte{reply(t, q)} })
			c := &client{servers: []string{addr}, timeout: 500 * time.Millisecond, dial: (&net.Dialer{}).DialContext}
			if _, err := c.ask(t.Context(), dnsmessage.MustNewName("x.test."), dnsmessage.TypeA); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// A cancelled context ends an exchange at once, whatever the timeout.
func TestExchangeEndsWithTheContext(t *testing.T) {
	addr := udpServer(t, func([]byte) [][]byte { return nil }) // never answers
	c := &client{servers: []string{addr}, timeout: time.Minute, dial: (&net.Dialer{}).DialContext}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.ask(ctx, dnsmessage.MustNewName("x.test."), dnsmessage.TypeA)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}
