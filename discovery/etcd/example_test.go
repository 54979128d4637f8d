package etcd_test

import (
	"context"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/discovery/etcd"
)

func ExampleInstanceKey() {
	fmt.Println(etcd.ServiceKey(etcd.DefaultPrefix, "orders"))
	fmt.Println(etcd.InstanceKey(etcd.DefaultPrefix, "orders", "orders-1"))
	// Output:
	// /chassis/services/orders/
	// /chassis/services/orders/orders-1
}

// A service registers itself and watches another; it needs a running etcd, so this example is
// compiled but not run.
func ExampleRegistry() {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close() // after the registry and the registrar

	reg, err := etcd.NewRegistrar(client, etcd.Registration{Name: "orders", Address: "10.0.0.7", Port: 8080})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := reg.Register(ctx); err != nil {
		log.Fatal(err)
	}
	defer reg.Deregister(ctx) //nolint:errcheck // the lease expires anyway

	registry, err := etcd.NewRegistry(client)
	if err != nil {
		log.Fatal(err)
	}
	defer registry.Close()
	w, err := registry.Watch("pricing")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	snap, err := w.Next(ctx, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(snap.Instances), snap.Err)
}
