// Package grpcwire holds the names Chassis' gRPC server (package grpcx) and client (package
// grpcx/grpcclient) agree on over the wire and in the registry, so that neither imports the other.
// Each package exports them again under its own name.
package grpcwire

const (
	// MetaPort is the Consul service metadata key under which an instance advertises its gRPC port,
	// on the same registration as its HTTP port.
	MetaPort = "grpc_port"
	// RequestID is the metadata key of the request id (X-Request-Id's gRPC counterpart).
	RequestID = "x-request-id"
	// Pushback is the trailer in which a server asks a client to wait before retrying, in
	// milliseconds (gRPC A6); a negative value asks it not to retry.
	Pushback = "grpc-retry-pushback-ms"
)
