package etcdsync

import clientv3 "go.etcd.io/etcd/client/v3"

// Client is the part of the etcd client the package uses: reads and transactions, leases, watches.
// *clientv3.Client implements it. So does a client whose KV, Lease and Watcher are wrapped by
// clientv3/namespace, to keep every key of a service under its own prefix.
type Client interface {
	clientv3.KV
	clientv3.Lease
	clientv3.Watcher
}

var _ Client = (*clientv3.Client)(nil)
