// Package bench holds Chassis' benchmarks beside its peers (bare net/http, go-kit, go-zero, Kratos,
// raw failsafe-go, otelhttp; for gRPC bare grpc-go, otelgrpc and the Kratos and go-zero gRPC
// clients). It is its own module so that peer libraries never enter the library's
// dependencies. Results and the commands that produced them are in ../BENCHMARKS.md.
//
// The Go benchmarks here run in process. The whole process over TCP loopback is measured by the
// harness in ./tcp (make bench-tcp): one server binary per configuration (./cmd/hello-*,
// ./cmd/gateway-*, the library's cmd/ambassador, and HAProxy when it is on PATH), each pinned to one core, loaded by wrk pinned to another, in interleaved rounds;
// with -profile it also records CPU and allocation profiles, GC traces, strace and perf per
// configuration. With -grpc it runs the gRPC servers instead (./cmd/grpc-*: bare grpc-go,
// otelgrpc, Chassis' svc.GRPC()), loaded by ghz.
package bench
