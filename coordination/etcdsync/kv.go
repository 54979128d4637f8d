package etcdsync

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/consul/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/coordination/dynconfig"
)

// KV implements dynconfig.KV on etcd, so that a dynconfig.Config reads its overrides from the keys
// under a prefix in etcd, with the same validation and rejection as with Consul. The blocking query
// is translated: the index is etcd's revision, and a query with WaitIndex watches the prefix from
// WaitIndex + 1 until a change or WaitTime. Reads are linearizable unless q.AllowStale asks for
// serializable ones (answered by the member the client talks to, possibly stale, also when it is cut
// off from the quorum). It is safe for concurrent use.
//
// dynconfig.New trims slashes off its prefix, so the keys have none in front: prefix
// "config/orders" reads etcd keys "config/orders/RATE_LIMIT" and so on.
type KV struct {
	cli Client
}

var _ dynconfig.KV = (*KV)(nil)

// NewKV wraps cli.
func NewKV(cli Client) *KV { return &KV{cli: cli} }

// List implements dynconfig.KV: the keys under prefix and etcd's revision as the index. When
// nothing changed under the prefix during the wait, the index stays q.WaitIndex.
func (k *KV) List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if q.AllowStale {
		opts = append(opts, clientv3.WithSerializable())
	}
	index := int64(q.WaitIndex)
	if index > 0 {
		wait := q.WaitTime
		if wait <= 0 {
			wait = DefaultWaitTime
		}
		changed, err := watchChange(ctx, k.cli, prefix, index, wait, clientv3.WithPrefix())
		if err != nil {
			return nil, nil, err
		}
		if !changed {
			// Nothing changed since the index: read the prefix as it was then, unless compacted.
			if pairs, meta, err := k.get(ctx, prefix, append(opts, clientv3.WithRev(index))); err == nil {
				meta.LastIndex = uint64(index)
				return pairs, meta, nil
			}
		}
	}
	return k.get(ctx, prefix, opts)
}

func (k *KV) get(ctx context.Context, prefix string, opts []clientv3.OpOption) (api.KVPairs, *api.QueryMeta, error) {
	r, err := k.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, nil, err
	}
	pairs := make(api.KVPairs, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		pairs = append(pairs, &api.KVPair{Key: string(kv.Key), Value: kv.Value,
			CreateIndex: uint64(kv.CreateRevision), ModifyIndex: uint64(kv.ModRevision)})
	}
	return pairs, &api.QueryMeta{LastIndex: uint64(r.Header.Revision)}, nil
}

// watchChange reports whether key (with opts: the keys under a prefix, deletions only) changed
// after revision at, waiting up to wait (0: until ctx ends). A compacted revision counts as a
// change: the caller reads afresh. The watch requires a leader, so on a member cut off from the
// quorum it fails instead of waiting for nothing.
func watchChange(ctx context.Context, cli Client, key string, at int64, wait time.Duration, opts ...clientv3.OpOption) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	if wait > 0 {
		wctx, cancel = context.WithTimeout(wctx, wait)
		defer cancel()
	}
	for r := range cli.Watch(wctx, key, append(opts, clientv3.WithRev(at+1))...) {
		if err := r.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return true, nil
			}
			return false, err
		}
		if len(r.Events) > 0 {
			return true, nil
		}
	}
	return false, ctx.Err() // nil: the wait passed without a change
}
