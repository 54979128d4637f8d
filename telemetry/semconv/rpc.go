package semconv

// gRPC server names, from the OpenTelemetry RPC semantic conventions, emitted by package grpcx.
const (
	// RPCServerCallDuration is a histogram in seconds (the bucket boundaries of
	// HTTPServerRequestDuration) with AttrRPCSystem, AttrRPCService, AttrRPCMethod and
	// AttrRPCGRPCStatusCode, one series per full method and status code.
	RPCServerCallDuration = "rpc.server.call.duration"
	// RPCServerActiveCalls is an up-down counter of calls in progress ({call}) with AttrRPCSystem.
	RPCServerActiveCalls = "rpc.server.active_calls"

	AttrRPCSystem         = "rpc.system"           // RPCSystemGRPC
	AttrRPCService        = "rpc.service"          // the full service name: "pkg.Service"
	AttrRPCMethod         = "rpc.method"           // the method name: "Method"
	AttrRPCGRPCStatusCode = "rpc.grpc.status_code" // the status code as an integer (0 OK ... 16)

	// RPCSystemGRPC is the AttrRPCSystem value of gRPC calls.
	RPCSystemGRPC = "grpc"
)
