// Package dnstest is a fake DNS server for testing code that uses discovery/dns.
//
// Start with Start (or New in a test) for a server on a loopback port that answers over UDP and TCP;
// the zero Server answers only in memory, through its Dial method, which tests under testing/synctest
// pass to dns.WithDialer. Set records with SetSRV and SetAddrs, remove them with Remove, and inject
// faults with Fail (an error code such as SERVFAIL), Drop (no answer: the client times out),
// SetMaxUDP (truncated UDP answers, so the client must retry over TCP) and SetAdditional (SRV answers
// without the targets' addresses). Queries counts what was asked, by network.
package dnstest
