package dns

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudchassis/kit/discovery"
)

// noTTL stands for "no record limited the refresh": the ceiling applies.
const noTTL = math.MaxUint32

// srvTarget is one SRV record of the preferred priority.
type srvTarget struct {
	host   string // lower-cased, fully qualified
	port   int
	weight int
}

// srvAnswer reads an SRV answer: the targets of the lowest priority (RFC 2782: clients must try them
// first; the others are backups, which a balancer does not mix in), the addresses the answer carries
// for them in its additional section, and the smallest TTL among the records used. An NXDOMAIN or an
// answer without SRV records is an empty set whose TTL is the negative-caching TTL of the SOA record
// in the authority section (RFC 2308), or noTTL without one.
func srvAnswer(m *dnsmessage.Message) (targets []srvTarget, addrs map[string][]addrTTL, ttl uint32) {
	ttl = noTTL
	best := -1
	for _, rr := range m.Answers {
		srv, ok := rr.Body.(*dnsmessage.SRVResource)
		if !ok || srv.Target.String() == "." { // "." means "no service here" (RFC 2782)
			continue
		}
		ttl = min(ttl, rr.Header.TTL)
		p := int(srv.Priority)
		if best >= 0 && p > best {
			continue
		}
		if p < best || best < 0 {
			best, targets = p, targets[:0]
		}
		targets = append(targets, srvTarget{host: lowerName(srv.Target), port: int(srv.Port), weight: int(srv.Weight)})
	}
	if len(targets) == 0 {
		return nil, nil, negativeTTL(m)
	}
	addrs = map[string][]addrTTL{}
	for _, rr := range m.Additionals {
		if a, ok := address(rr); ok {
			n := lowerName(rr.Header.Name)
			addrs[n] = append(addrs[n], addrTTL{a, rr.Header.TTL})
		}
	}
	return targets, addrs, ttl
}

// addrTTL is an address record's value and TTL.
type addrTTL struct {
	addr netip.Addr
	ttl  uint32
}

// addressAnswer reads the A or AAAA records of an answer (the resolver followed any CNAME chain; the
// chain's records are skipped) and the smallest TTL of the records it used, or of the negative answer.
func addressAnswer(m *dnsmessage.Message) (out []addrTTL, ttl uint32) {
	ttl = noTTL
	for _, rr := range m.Answers {
		a, ok := address(rr)
		if !ok {
			continue
		}
		out = append(out, addrTTL{a, rr.Header.TTL})
		ttl = min(ttl, rr.Header.TTL)
	}
	if len(out) == 0 {
		return nil, negativeTTL(m)
	}
	return out, ttl
}

func address(rr dnsmessage.Resource) (netip.Addr, bool) {
	switch b := rr.Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(b.A), true
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(b.AAAA), true
	}
	return netip.Addr{}, false
}

// negativeTTL is how long an empty answer may be cached: the smaller of the SOA record's own TTL and
// its MINIMUM field (RFC 2308 §5), or 0 when the answer carries no SOA record, which RFC 2308 §5 says
// must not be cached: the watch asks again after the refresh floor, so a service going from no
// instance to one is seen within the floor, not the ceiling.
func negativeTTL(m *dnsmessage.Message) uint32 {
	for _, rr := range m.Authorities {
		if soa, ok := rr.Body.(*dnsmessage.SOAResource); ok {
			return min(rr.Header.TTL, soa.MinTTL)
		}
	}
	return 0
}

func lowerName(n dnsmessage.Name) string { return strings.ToLower(n.String()) }

// instance makes the Instance of one address and port. Its ID is "address:port", which is what
// tells two instances apart in DNS: the records carry nothing else.
func instance(a netip.Addr, port, weight int) discovery.Instance {
	a = a.Unmap()
	return discovery.Instance{ID: netip.AddrPortFrom(a, uint16(port)).String(), Address: a.String(), Port: port, Weight: weight}
}

// sortInstances orders instances by ID and drops duplicates (a target listed twice, or two targets
// with the same address), so that an unchanged answer in another order makes no new snapshot.
func sortInstances(insts []discovery.Instance) []discovery.Instance {
	slices.SortFunc(insts, func(a, b discovery.Instance) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(b.Weight, a.Weight))
	})
	return slices.CompactFunc(insts, func(a, b discovery.Instance) bool { return a.ID == b.ID })
}
