package etcd

import clientv3 "go.etcd.io/etcd/client/v3"

// WrapKV replaces the KV the Registry lists through, for tests that need to change what a list
// answers before the first Watch.
func WrapKV(r *Registry, wrap func(clientv3.KV) clientv3.KV) { r.kv = wrap(r.kv) }
