package dnstest

import (
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// Answer returns the server's reply to the query msg received over network ("udp" or "tcp"), or nil
// when it sends none (a malformed query, or Drop).
func (s *Server) Answer(msg []byte, network string) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	limit := 512
	if err := p.SkipAllQuestions(); err == nil {
		_ = p.SkipAllAnswers()
		_ = p.SkipAllAuthorities()
		for {
			rh, err := p.AdditionalHeader()
			if err != nil {
				break
			}
			if rh.Type == dnsmessage.TypeOPT {
				limit = max(limit, int(rh.Class))
			}
			_ = p.SkipAdditional()
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queries == nil {
		s.queries = map[string]int{}
	}
	s.queries[network]++
	if s.drop {
		return nil
	}
	if s.maxUDP > 0 {
		limit = s.maxUDP
	}
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired},
		Questions: []dnsmessage.Question{q},
	}
	name := fqdn(q.Name.String())
	rs, known := s.zone[name]
	switch {
	case s.rcode != dnsmessage.RCodeSuccess:
		resp.RCode = s.rcode
	case !known:
		resp.RCode = dnsmessage.RCodeNameError
	default:
		s.fill(&resp, q, rs)
	}
	if len(resp.Answers) == 0 && resp.RCode != dnsmessage.RCodeServerFailure && resp.RCode != dnsmessage.RCodeRefused {
		resp.Authorities = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("test."), Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET, TTL: s.negTTL},
			Body: &dnsmessage.SOAResource{NS: dnsmessage.MustNewName("ns.test."), MBox: dnsmessage.MustNewName("hostmaster.test."),
				Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: s.negTTL},
		}}
	}
	out, err := resp.Pack()
	if err != nil {
		return nil
	}
	if network == "udp" && len(out) > limit && s.silentTrunc {
		for len(out) > limit && len(resp.Answers) > 0 {
			resp.Answers = resp.Answers[:len(resp.Answers)-1]
			if len(resp.Additionals) > 0 {
				resp.Additionals = resp.Additionals[:len(resp.Additionals)-1]
			}
			out, _ = resp.Pack()
		}
		return out
	}
	if network == "udp" && len(out) > limit {
		resp.Truncated = true
		resp.Answers, resp.Authorities, resp.Additionals = nil, nil, nil
		out, _ = resp.Pack()
	}
	return out
}

// fill adds the records of rs that answer q, and for SRV the targets' addresses. s.mu is held.
func (s *Server) fill(resp *dnsmessage.Message, q dnsmessage.Question, rs rrset) {
	hdr := func(name dnsmessage.Name, typ dnsmessage.Type, ttl uint32) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: name, Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}
	}
	switch q.Type {
	case dnsmessage.TypeSRV:
		for _, t := range rs.srv {
			target, err := dnsmessage.NewName(fqdn(t.Target))
			if err != nil {
				continue
			}
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: hdr(q.Name, dnsmessage.TypeSRV, rs.ttl),
				Body: &dnsmessage.SRVResource{Priority: t.Priority, Weight: t.Weight, Port: t.Port, Target: target}})
			if s.noAdditional {
				continue
			}
			trs := s.zone[fqdn(t.Target)]
			for _, a := range trs.addrs {
				resp.Additionals = append(resp.Additionals, addrResource(hdr(target, 0, trs.ttl), a))
			}
		}
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		for _, a := range rs.addrs {
			if a.Is4() == (q.Type == dnsmessage.TypeA) {
				resp.Answers = append(resp.Answers, addrResource(hdr(q.Name, 0, rs.ttl), a))
			}
		}
	}
}

func addrResource(h dnsmessage.ResourceHeader, a netip.Addr) dnsmessage.Resource {
	if a.Is4() {
		h.Type = dnsmessage.TypeA
		return dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}}
	}
	h.Type = dnsmessage.TypeAAAA
	return dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}}
}
