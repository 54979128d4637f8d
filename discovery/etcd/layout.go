package etcd

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudchassis/kit/discovery"
)

// The key layout. An instance of service <name> is the key
//
//	<prefix>/services/<name>/<id>
//
// whose value is the JSON of one instance (the fields of discovery.Instance):
//
//	{"id":"orders-1","address":"10.0.0.7","port":8080,"tags":["v2"],"meta":{"grpc_port":"9000"},"weight":1}
//
// attached to the lease of the process that registered it: health is the lease. A watch of <name>
// follows the prefix "<prefix>/services/<name>/" (with the slash, so "orders" does not match
// "orders-v2").

// ServiceKey returns the key prefix under which the instances of service are registered.
func ServiceKey(prefix, service string) string {
	return strings.TrimRight(prefix, "/") + "/services/" + service + "/"
}

// InstanceKey returns the key of one instance.
func InstanceKey(prefix, service, id string) string { return ServiceKey(prefix, service) + id }

// record is an instance as stored in etcd.
type record struct {
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Weight  int               `json:"weight,omitempty"`
}

func encode(i discovery.Instance) ([]byte, error) {
	return json.Marshal(record{ID: i.ID, Address: i.Address, Port: i.Port, Tags: i.Tags, Meta: i.Meta, Weight: i.Weight})
}

// decode reads the value of key; an instance without an id takes the key's last segment.
func decode(key string, value []byte) (discovery.Instance, error) {
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return discovery.Instance{}, fmt.Errorf("key %q: not an instance: %w", key, err)
	}
	if r.ID == "" {
		r.ID = key[strings.LastIndexByte(key, '/')+1:]
	}
	if r.Address == "" || r.Port < 1 || r.Port > 65535 {
		return discovery.Instance{}, fmt.Errorf("key %q: instance %q has no address or no port in 1-65535", key, r.ID)
	}
	return discovery.Instance{ID: r.ID, Address: r.Address, Port: r.Port, Tags: r.Tags, Meta: r.Meta, Weight: r.Weight}, nil
}

// sorted returns the instances of a key → instance map in a stable order, as a new slice.
func sorted(m map[string]discovery.Instance) []discovery.Instance {
	out := make([]discovery.Instance, 0, len(m))
	for _, i := range m {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b discovery.Instance) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	return out
}
