package discovery

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"
)

// ErrClosed is returned by Watcher.Next after the watcher has been closed.
var ErrClosed = errors.New("discovery: watcher closed")

// Instance is one reachable copy of a service. Instances are values: a Snapshot holds them and nothing
// mutates them after the snapshot is published.
type Instance struct {
	// ID is unique within the service (Consul's service ID, or "host:port" for static lists).
	ID      string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Weight is the relative share of traffic the instance should get; 0 means the default of 1.
	Weight int
}

// HostPort returns the instance's dialable "address:port".
func (i Instance) HostPort() string { return net.JoinHostPort(i.Address, strconv.Itoa(i.Port)) }

// Equal reports whether two instances describe the same endpoint with the same metadata.
func (i Instance) Equal(o Instance) bool {
	return i.ID == o.ID && i.Address == o.Address && i.Port == o.Port && i.Weight == o.Weight &&
		slices.Equal(i.Tags, o.Tags) && maps.Equal(i.Meta, o.Meta)
}

// Snapshot is an immutable view of a service's healthy instances at one moment. Consumers must not
// modify Instances; a new Snapshot is built for every change.
type Snapshot struct {
	Service   string
	Instances []Instance
	// Version increases with every snapshot a watcher publishes; 0 means "none yet".
	Version uint64
	// Updated is when the registry last confirmed this list. When the registry is unreachable the
	// watcher keeps serving the last known good list and Updated stops moving: time.Since(Updated) is
	// the list's age.
	Updated time.Time
	// Err is set while the registry is failing and the instances are the last known good list.
	Err error
}

// Watcher follows one service's instances.
//
// Next blocks until a snapshot newer than the last one returned to this caller is available, or ctx is
// done. The first call returns as soon as any snapshot (even an empty one) exists. Watchers are safe for
// concurrent use; each caller of Next should keep its own version through the returned snapshots.
type Watcher interface {
	Next(ctx context.Context, after uint64) (Snapshot, error)
}

// Registrar announces this process' instance to a registry.
//
// Register is called once the service is ready; Deregister at the start of the drain. Both are
// idempotent. Implementations that keep the registration alive (heartbeats, re-registration after the
// agent lost it) stop doing so in Deregister.
type Registrar interface {
	Register(ctx context.Context) error
	Deregister(ctx context.Context) error
}
