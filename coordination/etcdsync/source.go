package etcdsync

import (
	"context"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/lock"
)

// Source reads the leader of an election run with a Lock on the same key: the holder of the key
// with the lowest CreateRevision under key + "/". It implements election.Source with linearizable
// reads, and waits for a change with a watch that requires a leader. It is safe for concurrent use.
type Source struct {
	cli  Client
	pfx  string
	wait time.Duration
}

var (
	_ election.Source = (*Source)(nil)
	_ election.Locker = (*Lock)(nil)
)

// NewSource returns the Source of the election on key. A wait for a change lasts at most
// DefaultWaitTime.
func NewSource(cli Client, key string) *Source {
	return &Source{cli: cli, pfx: key + "/", wait: DefaultWaitTime}
}

// Leader implements election.Source: the current leader at once when index is 0, else after a change
// under the prefix since revision index, or after the wait time. The index is etcd's revision.
func (s *Source) Leader(ctx context.Context, index uint64) (election.Leader, uint64, error) {
	if index > 0 {
		if _, err := watchChange(ctx, s.cli, s.pfx, int64(index), s.wait, clientv3.WithPrefix()); err != nil {
			return election.Leader{}, 0, err
		}
	}
	r, err := s.cli.Get(ctx, s.pfx, clientv3.WithFirstCreate()...)
	if err != nil {
		return election.Leader{}, 0, err
	}
	if len(r.Kvs) == 0 {
		return election.Leader{}, uint64(r.Header.Revision), nil
	}
	kv := r.Kvs[0]
	return election.Leader{Value: string(kv.Value), Session: strconv.FormatInt(kv.Lease, 16), Token: lock.Token(kv.CreateRevision)},
		uint64(r.Header.Revision), nil
}
