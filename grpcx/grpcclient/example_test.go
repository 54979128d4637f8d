package grpcclient_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

func Example() {
	// A gRPC server, as another service would run it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	port := ln.Addr().(*net.TCPAddr).Port

	// Its instances, as discovery finds them: here a fixed list, in Chassis DISCOVERY_STATIC_PRICING
	// or Consul.
	w := discovery.NewStatic("pricing", []discovery.Instance{{ID: "pricing-1", Address: "127.0.0.1", Port: port}})
	c, err := grpcclient.New("pricing", w, grpcclient.WithIdempotent("/grpc.health.v1.Health/Check"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if err := c.Start(); err != nil {
		fmt.Println(err)
		return
	}

	resp, err := healthpb.NewHealthClient(c.Conn()).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
