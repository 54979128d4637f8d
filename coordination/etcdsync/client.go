package etcdsync

import clientv3 "go.etcd.io/etcd/client/v3"

// Client is the part of the etcd client the package uses: reads and transactions, leases, watches.
// *clientv3.Client implements it; to keep every key of a service under its own prefix, set the
// client's KV, Lease and Watcher to clientv3/namespace's wrappers, as etcd documents.
type Client interface {
	clientv3.KV
	clientv3.Lease
	clientv3.Watcher
}

var _ Client = (*clientv3.Client)(nil)
