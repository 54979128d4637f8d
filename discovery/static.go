package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrStale is set (wrapped) as Snapshot.Err when a watcher dropped its last known list because the
// registry has been unreachable for longer than the configured maximum staleness.
var ErrStale = errors.New("discovery: instance list too old, dropped")

// Static is a Watcher over a fixed list of instances, for when there is no registry (tests, local runs,
// DISCOVERY=static). Its single snapshot has Version 1; Next with after >= 1 blocks until ctx is done,
// because a fixed list never changes.
//
// The zero value is not usable; create one with NewStatic. Static is safe for concurrent use.
type Static struct {
	snap Snapshot
}

var _ Watcher = (*Static)(nil)

// NewStatic returns a Static watcher for service. The instances are copied.
func NewStatic(service string, instances []Instance) *Static {
	insts := make([]Instance, len(instances))
	copy(insts, instances)
	return &Static{snap: Snapshot{Service: service, Instances: insts, Version: 1, Updated: time.Now()}}
}

// Next returns the fixed snapshot if after is 0 and otherwise waits for ctx.
func (s *Static) Next(ctx context.Context, after uint64) (Snapshot, error) {
	if after < s.snap.Version {
		return s.snap, nil
	}
	<-ctx.Done()
	return Snapshot{}, ctx.Err()
}

// ParseStatic parses a comma-separated list of "host:port" endpoints, as found in an environment variable
// such as DISCOVERY_STATIC_PRICING="10.0.0.1:8080,pricing-2:8080,[::1]:9090". Spaces around entries are
// ignored, as are empty entries (so "" is an empty list). Each instance gets "host:port" as its ID.
// Every problem is reported, joined, in one error.
func ParseStatic(s string) ([]Instance, error) {
	var (
		out  []Instance
		errs []error
		seen = map[string]bool{}
	)
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, portStr, err := net.SplitHostPort(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: not host:port: %w", entry, err))
			continue
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("%q: port %q is not a number in 1-65535", entry, portStr))
			continue
		}
		if host == "" || strings.ContainsAny(host, " \t/@?#") {
			errs = append(errs, fmt.Errorf("%q: host %q is empty or not a host name or IP address", entry, host))
			continue
		}
		inst := Instance{Address: host, Port: port}
		inst.ID = inst.HostPort()
		if seen[inst.ID] {
			errs = append(errs, fmt.Errorf("%q: listed twice", entry))
			continue
		}
		seen[inst.ID] = true
		out = append(out, inst)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("discovery: static list: %w", errors.Join(errs...))
	}
	return out, nil
}
