package main

import "fmt"

// server is one process of a configuration: which binary, and its arguments and environment given
// its listen addresses.
type server struct {
	bin string
	// args and env build the command line and the environment (added to the driver's own) from the
	// public address, the admin (pprof) address, the backend address (two-hop gateways) and the
	// URL of the discarding OTLP receiver.
	args func(a addrs) []string
	env  func(a addrs) []string
	// pprof is the path prefix of net/http/pprof on the admin address.
	pprof string
	// grpc: the public address serves gRPC (ghz loads it; readiness is its health service).
	grpc bool
	// prefix is put before the request paths (/hello/ready, /hello/world): the path prefix a
	// routing proxy (the ambassador) forwards on.
	prefix string
	// onPath: bin is found on PATH (a program the harness does not build: haproxy).
	onPath bool
	// conf, when set, is a configuration file written to the work directory and given as -f FILE.
	conf func(a addrs) string
}

type addrs struct {
	public, admin, backend, otlp string
}

// target is one configuration: a row of a table.
type target struct {
	name    string
	about   string
	front   server  // the process wrk loads
	backend *server // two-hop only: the process the front calls
	base    bool    // the baseline that ratios are taken against
}

// chassisEnv is what every Chassis process of the harness gets: fixed loopback ports, static
// discovery, no drain delay (it only slows the harness' stops) and the default everything else.
func chassisEnv(a addrs, extra ...string) []string {
	host, port := splitAddr(a.public)
	_, admin := splitAddr(a.admin)
	return append([]string{"HOST=" + host, "PORT=" + port, "ADMIN_PORT=" + admin, "DISCOVERY=static",
		"DRAIN_DELAY=0s", "SERVICE_NAME=hello"}, extra...)
}

// otlpEnv points a process at the discarding OTLP receiver with 1% parent-based trace sampling.
func otlpEnv(a addrs) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + a.otlp, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"}
}

func flagArgs(a addrs) []string { return []string{"-addr", a.public, "-admin", a.admin} }

var (
	bare = server{bin: "hello-bare", args: flagArgs, pprof: "/debug/pprof"}

	backend = server{bin: "hello-bare", pprof: "/debug/pprof",
		args: func(a addrs) []string { return append(flagArgs(a), "-count-conns") }}
)

func singleHop() []target {
	return []target{
		{name: "bare", base: true, about: "net/http ServeMux, nothing else", front: bare},
		{name: "chassis", about: "Chassis defaults: access log on (JSON lines to a file), no OTLP endpoint",
			front: server{bin: "hello-chassis", pprof: "/debug/pprof",
				env: func(a addrs) []string { return chassisEnv(a) }}},
		{name: "chassis-nolog", about: "Chassis, ACCESS_LOG=false",
			front: server{bin: "hello-chassis", pprof: "/debug/pprof",
				env: func(a addrs) []string { return chassisEnv(a, "ACCESS_LOG=false") }}},
		{name: "chassis-otlp", about: "Chassis defaults plus OTLP/HTTP export (traces at 1% parent-based sampling, metrics) to a discarding receiver",
			front: server{bin: "hello-chassis", pprof: "/debug/pprof",
				env: func(a addrs) []string { return chassisEnv(a, otlpEnv(a)...) }}},
		{name: "gozero", about: "go-zero rest, default middleware, log level error, OTLP/HTTP traces at 1%, dev server (Prometheus) on",
			front: server{bin: "hello-gozero", args: flagArgs, env: otlpEnv, pprof: "/debug/pprof"}},
		{name: "kratos", about: "Kratos HTTP: recovery, tracing (OTLP/HTTP at 1%), metrics (OTel → Prometheus)",
			front: server{bin: "hello-kratos", args: flagArgs, env: otlpEnv, pprof: "/debug/pprof"}},
		{name: "gokit", about: "go-kit httptransport + Prometheus instrumenting middleware under otelhttp (OTLP/HTTP at 1%)",
			front: server{bin: "hello-gokit", args: flagArgs, env: otlpEnv, pprof: "/debug/pprof"}},
	}
}

// grpcTargets are the gRPC configurations (-grpc): grpc.testing.TestService/UnaryCall loaded by
// ghz. The public address is the gRPC port.
func grpcTargets() []target {
	chassisGRPC := func(extra ...string) func(a addrs) []string {
		return func(a addrs) []string {
			// The HTTP port is any free one; the gRPC port is the address ghz loads.
			env := chassisEnv(a, extra...)
			_, port := splitAddr(a.public)
			return append(env, "PORT=0", "GRPC_PORT="+port)
		}
	}
	return []target{
		{name: "grpc-bare", base: true, about: "grpc-go server, the health service, nothing else",
			front: server{bin: "grpc-bare", args: flagArgs, pprof: "/debug/pprof", grpc: true}},
		{name: "grpc-otelgrpc", about: "grpc-go with otelgrpc's server stats handler: OTLP/HTTP traces at 1% parent-based, metrics (OTel → Prometheus)",
			front: server{bin: "grpc-bare", args: func(a addrs) []string { return append(flagArgs(a), "-otel") },
				env: otlpEnv, pprof: "/debug/pprof", grpc: true}},
		{name: "grpc-chassis", about: "Chassis svc.GRPC() defaults: access log on (JSON lines to a file), no OTLP endpoint",
			front: server{bin: "grpc-chassis", env: chassisGRPC(), pprof: "/debug/pprof", grpc: true}},
		{name: "grpc-chassis-nolog", about: "Chassis svc.GRPC(), ACCESS_LOG=false",
			front: server{bin: "grpc-chassis", env: chassisGRPC("ACCESS_LOG=false"), pprof: "/debug/pprof", grpc: true}},
		{name: "grpc-chassis-otlp", about: "Chassis svc.GRPC() defaults plus OTLP/HTTP export (traces at 1% parent-based sampling, metrics) to a discarding receiver",
			front: server{bin: "grpc-chassis", pprof: "/debug/pprof", grpc: true,
				env: func(a addrs) []string { return chassisGRPC(otlpEnv(a)...)(a) }}},
	}
}

func twoHopTargets() []target {
	b := backend
	return []target{
		{name: "proxy", base: true, about: "httputil.ReverseProxy, http.DefaultTransport (2 idle conns per host)", backend: &b,
			front: server{bin: "gateway-proxy", pprof: "/debug/pprof",
				args: func(a addrs) []string { return append(flagArgs(a), "-backend", a.backend) }}},
		{name: "proxy-idle256", about: "httputil.ReverseProxy, DefaultTransport clone with MaxIdleConnsPerHost 256", backend: &b,
			front: server{bin: "gateway-proxy", pprof: "/debug/pprof",
				args: func(a addrs) []string { return append(flagArgs(a), "-backend", a.backend, "-idle-per-host", "256") }}},
		{name: "chassis-gateway", about: "Chassis defaults, handler calling the backend through svc.Client (static discovery)", backend: &b,
			front: server{bin: "gateway-chassis", pprof: "/debug/pprof",
				env: func(a addrs) []string {
					return chassisEnv(a, "SERVICE_NAME=gateway", "DISCOVERY_STATIC_BACKEND="+a.backend)
				}}},
		{name: "ambassador", about: "cmd/ambassador defaults (access log on), GET /backend/... forwarded through svc.Client's chain (static discovery)", backend: &b,
			front: server{bin: "ambassador", pprof: "/debug/pprof", prefix: "/backend",
				env: func(a addrs) []string {
					return chassisEnv(a, "SERVICE_NAME=ambassador", "AMBASSADOR_ROUTES=backend", "DISCOVERY_STATIC_BACKEND="+a.backend)
				}}},
		{name: "haproxy", about: "HAProxy (Debian package), one thread, keep-alive and connection reuse to the backend; skipped when haproxy is not on PATH", backend: &b,
			front: server{bin: "haproxy", onPath: true, args: func(addrs) []string { return []string{"-db"} }, conf: haproxyConf}},
	}
}

// haproxyConf is HAProxy in front of the backend, as close to the Go proxies as its knobs allow:
// one thread (the servers share one core), HTTP keep-alive on both sides, idle connections to the
// backend reused by every request.
func haproxyConf(a addrs) string {
	return `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend front
  bind ` + a.public + `
  default_backend backend
backend backend
  http-reuse always
  server backend ` + a.backend + `
`
}

func (s server) command(a addrs) (args, env []string) {
	if s.args != nil {
		args = s.args(a)
	}
	if s.env != nil {
		env = s.env(a)
	}
	return args, env
}

func (t target) String() string { return fmt.Sprintf("%s (%s)", t.name, t.about) }
