package dnstest_test

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudchassis/kit/discovery/dns/dnstest"
)

// Answer a query in memory, the way a listening server answers it over UDP.
func Example() {
	var srv dnstest.Server // the zero value answers in memory (Dial, Answer)
	srv.SetAddrs("db.test", 30, netip.MustParseAddr("10.0.0.7"))

	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("db.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, _ := b.Finish()

	var m dnsmessage.Message
	_ = m.Unpack(srv.Answer(q, "udp"))
	fmt.Println(m.RCode, m.Answers[0].Body.GoString() != "", m.Answers[0].Header.TTL)
	fmt.Println(srv.Queries("udp"))
	// Output:
	// RCodeSuccess true 30
	// 1
}
