package semconv

// gRPC names, from the OpenTelemetry RPC semantic conventions, emitted by package grpcx (server)
// and grpcx/grpcclient (client).
const (
	// RPCClientCallDuration is the client's histogram in seconds per call, retries and hedges
	// included (the bucket boundaries of HTTPClientRequestDuration), with AttrRPCSystem,
	// AttrRPCService, AttrRPCMethod, AttrRPCGRPCStatusCode and AttrPeerService.
	RPCClientCallDuration = "rpc.client.call.duration"

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
