package main

import (
	"fmt"
	"sort"
	"strings"
)

// Failure reasons: why a request of the load generator failed, as its answer (the status and the
// problem details' detail) or its transport error says.
const (
	reasonShed        = "shed"         // 503 from a load shedder at its limit ("server overloaded")
	reasonRateLimited = "rate-limited" // 429
	reasonTimeout     = "timeout"      // 504, or the client's deadline
	reasonRefused     = "connection refused"
	reasonConnLost    = "connection lost" // reset, EOF, broken pipe
	reasonUpstream    = "upstream error"  // 502: a dependency of the gateway failed
	reasonUnavailable = "unavailable"     // another 503
	reasonNoInstance  = "no instance"     // the client's balancer had none
	reasonSaturated   = "load generator saturated"
	reasonServerError = "server error"
	reasonClientError = "client error"
	reasonTransport   = "transport error"
)

// failureKey is what the summary groups failures by.
type failureKey struct {
	Status   string `json:"status"`   // "503", or "no response"
	Route    string `json:"route"`    // the load generator's operation, "POST /cart/{user}/items"
	Instance string `json:"instance"` // the gateway that answered (X-Instance), else the one the last attempt went to; "" if none
	Reason   string `json:"reason"`   // one of the reason constants
}

// Failure is a group of failed requests with the same status, route, instance and reason.
type Failure struct {
	failureKey
	Count  int     `json:"count"`
	Detail string  `json:"detail,omitempty"`  // the first one's problem detail or error
	First  float64 `json:"first_s,omitempty"` // seconds since the load started
	Last   float64 `json:"last_s,omitempty"`
}

func keyOf(o outcome) failureKey {
	k := failureKey{Status: "no response", Route: o.op, Instance: o.instance, Reason: classify(o)}
	if o.status != 0 {
		k.Status = itoa(o.status)
	}
	return k
}

// classify names the reason of a failed request from its status, its problem detail or its error.
func classify(o outcome) string {
	if o.err != "" {
		e := strings.ToLower(o.err)
		switch {
		case strings.Contains(e, "load generator saturated"):
			return reasonSaturated
		case strings.Contains(e, "connection refused"):
			return reasonRefused
		case strings.Contains(e, "deadline exceeded"), strings.Contains(e, "timeout"):
			return reasonTimeout
		case strings.Contains(e, "connection reset"), strings.Contains(e, "eof"), strings.Contains(e, "broken pipe"):
			return reasonConnLost
		case strings.Contains(e, "no instances"):
			return reasonNoInstance
		}
		return reasonTransport
	}
	switch {
	case o.status == 503 && strings.Contains(o.detail, "server overloaded"):
		return reasonShed
	case o.status == 503:
		return reasonUnavailable
	case o.status == 429:
		return reasonRateLimited
	case o.status == 504:
		return reasonTimeout
	case o.status == 502:
		return reasonUpstream
	case o.status >= 500:
		return reasonServerError
	}
	return reasonClientError
}

// addFailure counts a failed outcome; s.mu is held.
func (s *stats) addFailure(o outcome) {
	k := keyOf(o)
	at := roundTo(o.at.Sub(s.start).Seconds(), 0.1)
	f := s.failures[k]
	if f == nil {
		d := o.detail
		if o.err != "" {
			d = o.err
		}
		f = &Failure{failureKey: k, Detail: shorten(d), First: at}
		s.failures[k] = f
	}
	f.Count++
	f.Last = at
}

// sortFailures orders failures most first, then by route, status, instance and reason.
func sortFailures(fs []Failure) {
	sort.Slice(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Route != b.Route {
			return a.Route < b.Route
		}
		if a.Status != b.Status {
			return a.Status < b.Status
		}
		if a.Instance != b.Instance {
			return a.Instance < b.Instance
		}
		return a.Reason < b.Reason
	})
}

// String is one line: "11× POST /cart/{user}/items 503 from gateway-2: shed".
func (f Failure) String() string {
	s := fmt.Sprintf("%d× %s %s", f.Count, f.Route, f.Status)
	if f.Instance != "" {
		s += " from " + f.Instance
	}
	return s + ": " + f.Reason
}

// explainFailures is the failures of a window in a few words: the largest groups, then how many
// more.
func explainFailures(fs []Failure) string {
	const shown = 3
	parts := make([]string, 0, shown+1)
	for i, f := range fs {
		if i == shown {
			rest := 0
			for _, g := range fs[shown:] {
				rest += g.Count
			}
			parts = append(parts, fmt.Sprintf("%d more in %d other groups", rest, len(fs)-shown))
			break
		}
		parts = append(parts, f.String())
	}
	return strings.Join(parts, ", ")
}
