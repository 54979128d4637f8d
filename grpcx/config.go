package grpcx

import (
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/grpcwire"
)

// MetaPort is the key of the Consul service metadata under which an instance advertises its gRPC
// port, on the same registration as its HTTP port: callers dial Address:Meta[MetaPort]. An instance
// without it serves no gRPC.
const MetaPort = grpcwire.MetaPort

// DefaultPort is the default gRPC port (GRPC_PORT).
const DefaultPort = 9000

// ServerConfig configures the gRPC server from the environment (envconfig tags); chassis.Settings
// embeds it. The zero value is not the default: load it with package config, or start from
// DefaultConfig.
type ServerConfig struct {
	Port           int             `envconfig:"GRPC_PORT" default:"9000" validate:"min=0,max=65535" desc:"gRPC port, served only when the service uses its gRPC server (Service.GRPC); 0 picks a free port"`
	MaxRecvBytes   config.ByteSize `envconfig:"GRPC_MAX_RECV_BYTES" default:"4MiB" validate:"gt=0,lte=2147483647" desc:"largest gRPC message the server accepts (larger gets RESOURCE_EXHAUSTED)"`
	MaxSendBytes   config.ByteSize `envconfig:"GRPC_MAX_SEND_BYTES" default:"4MiB" validate:"gt=0,lte=2147483647" desc:"largest gRPC message the server sends (a handler's larger answer fails with RESOURCE_EXHAUSTED)"`
	MaxStreams     uint32          `envconfig:"GRPC_MAX_CONCURRENT_STREAMS" default:"1000" validate:"gt=0" desc:"concurrent calls one client connection may have open"`
	RequestTimeout time.Duration   `envconfig:"GRPC_REQUEST_TIMEOUT" default:"30s" validate:"gte=0" desc:"longest deadline of a unary call's context (streams live as long as their caller wants); the caller's shorter deadline wins; 0 keeps the caller's alone"`

	// Keepalive: what the server asks of clients (enforcement) and how it probes idle connections.
	KeepaliveMinTime      time.Duration `envconfig:"GRPC_KEEPALIVE_MIN_TIME" default:"10s" validate:"gte=0" desc:"clients that ping more often than this are disconnected (GOAWAY too_many_pings)"`
	KeepaliveWithoutCalls bool          `envconfig:"GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS" default:"true" desc:"allow client pings on connections with no call in progress"`
	KeepaliveTime         time.Duration `envconfig:"GRPC_KEEPALIVE_TIME" default:"1m" validate:"gte=0" desc:"the server pings a connection idle for this long, to find dead peers"`
	KeepaliveTimeout      time.Duration `envconfig:"GRPC_KEEPALIVE_TIMEOUT" default:"20s" validate:"gte=0" desc:"a ping unanswered for this long closes the connection"`
	MaxConnectionIdle     time.Duration `envconfig:"GRPC_MAX_CONNECTION_IDLE" default:"0s" validate:"gte=0" desc:"close connections with no call for this long (0: never)"`
	MaxConnectionAge      time.Duration `envconfig:"GRPC_MAX_CONNECTION_AGE" default:"0s" validate:"gte=0" desc:"close connections older than this (GOAWAY, so that clients reconnect and rebalance; 0: never)"`
	MaxConnectionAgeGrace time.Duration `envconfig:"GRPC_MAX_CONNECTION_AGE_GRACE" default:"0s" validate:"gte=0" desc:"time calls get to finish after GRPC_MAX_CONNECTION_AGE (0: unlimited)"`

	Reflection bool `envconfig:"GRPC_REFLECTION" default:"false" desc:"serve the gRPC reflection service (grpcurl list/describe) on the gRPC port; never on by default, since it describes every API to anyone who can connect"`
}

// DefaultConfig returns the defaults that the environment tags describe.
func DefaultConfig() ServerConfig {
	return ServerConfig{
		Port:                  DefaultPort,
		MaxRecvBytes:          4 << 20,
		MaxSendBytes:          4 << 20,
		MaxStreams:            1000,
		RequestTimeout:        30 * time.Second,
		KeepaliveMinTime:      10 * time.Second,
		KeepaliveWithoutCalls: true,
		KeepaliveTime:         time.Minute,
		KeepaliveTimeout:      20 * time.Second,
	}
}

// ServerOptions returns the grpc.ServerOptions that c describes: message size limits, the stream
// limit, the keepalive enforcement policy and parameters. Interceptors and credentials are not
// among them (see Interceptors and chassis.Service.GRPC).
func (c ServerConfig) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.KeepaliveMinTime,
			PermitWithoutStream: c.KeepaliveWithoutCalls,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     c.MaxConnectionIdle,
			MaxConnectionAge:      c.MaxConnectionAge,
			MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
			Time:                  c.KeepaliveTime,
			Timeout:               c.KeepaliveTimeout,
		}),
	}
	if c.MaxRecvBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(int(min(c.MaxRecvBytes, math.MaxInt32))))
	}
	if c.MaxSendBytes > 0 {
		opts = append(opts, grpc.MaxSendMsgSize(int(min(c.MaxSendBytes, math.MaxInt32))))
	}
	if c.MaxStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(c.MaxStreams))
	}
	return opts
}
