package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudchassis/kit/discovery"
)

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConf(strings.NewReader(`# generated
search default.svc.cluster.local svc.cluster.local
nameserver 10.96.0.10
nameserver fe80::1%eth0
nameserver not-an-ip
options ndots:5
nameserver	::1
`))
	want := []string{"10.96.0.10:53", "[fe80::1]:53", "[::1]:53"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// FuzzAnswer feeds arbitrary bytes to the code that reads answers: whatever a server sends, reading
// it must not panic, and the instances made of it are sorted, unique and carry the ports of the
// records.
func FuzzAnswer(f *testing.F) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("s.test."), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET})
	_ = b.StartAnswers()
	h := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("s.test."), Class: dnsmessage.ClassINET, TTL: 5}
	_ = b.SRVResource(h, dnsmessage.SRVResource{Port: 80, Target: dnsmessage.MustNewName("a.test.")})
	_ = b.SRVResource(h, dnsmessage.SRVResource{Priority: 1, Port: 81, Target: dnsmessage.MustNewName("b.test.")})
	_ = b.StartAdditionals()
	h.Name = dnsmessage.MustNewName("a.test.")
	_ = b.AResource(h, dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}})
	_ = b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00::1").As16()})
	msg, _ := b.Finish()
	f.Add(msg)
	f.Add([]byte{})
	f.Add(msg[:len(msg)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		var m dnsmessage.Message
		if m.Unpack(data) != nil {
			return
		}
		targets, addrs, ttl := srvAnswer(&m)
		ports := map[int]bool{}
		for _, tg := range targets {
			ports[tg.port] = true
		}
		var insts []discovery.Instance
		for _, tg := range targets {
			for _, a := range addrs[tg.host] {
				if a.ttl < ttl {
					ttl = a.ttl
				}
				insts = append(insts, instance(a.addr, tg.port, tg.weight))
			}
		}
		insts = sortInstances(insts)
		for i, in := range insts {
			if !ports[in.Port] || in.ID != netip.AddrPortFrom(netip.MustParseAddr(in.Address), uint16(in.Port)).String() {
				t.Fatalf("instance %+v does not come from the records", in)
			}
			if i > 0 && insts[i-1].ID >= in.ID {
				t.Fatalf("instances not sorted and unique: %v", insts)
			}
		}
		out, _ := addressAnswer(&m)
		for _, a := range out {
			if !a.addr.IsValid() {
				t.Fatalf("invalid address %v", a.addr)
			}
		}
	})
}
