package grpcclient

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// stream instruments a stream and lets the gRPC picker choose its instance with the Client's
// balancer (outcomes fed back when the stream ends). Streams are not retried, hedged or timed out
// by the client's policies: a stream's messages cannot be replayed, and its lifetime is the
// caller's (its context's deadline is propagated as for any call).
func (c *Client) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, end := c.tel.start(ctx, method, c.opts.requestID)
	// A stream lives as long as its caller wants, but waiting for a connection is bounded by the
	// overall timeout (CLIENT_<NAME>_TIMEOUT), as for a unary call.
	wctx := ctx
	if d := c.opts.cfg.Timeout; d > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if err := c.waitConnected(wctx); err != nil {
		err = toStatus(err)
		end(ctx, err)
		return nil, err
	}
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		end(ctx, err)
		return nil, err
	}
	st := &clientStream{ClientStream: cs, ctx: ctx, end: end, serverStreams: desc.ServerStreams}
	// A caller that cancels its context and drops the stream, without reading to its end, still
	// ends the span and records the call (grpc-go ends the stream then too).
	// The callback does not read st.stop, which is written after it may already run.
	st.stop = context.AfterFunc(ctx, func() { st.end1(status.FromContextError(ctx.Err()).Err()) })
	return st, nil
}

// clientStream ends the span and records the duration when the stream ends: RecvMsg returns an
// error (io.EOF is success), or a unary response arrived.
type clientStream struct {
	grpc.ClientStream
	ctx           context.Context
	end           func(context.Context, error)
	serverStreams bool
	once          sync.Once
	stop          func() bool // stops the context's AfterFunc
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	switch {
	case errors.Is(err, io.EOF):
		s.finish(nil)
	case err != nil:
		s.finish(err)
	case !s.serverStreams:
		s.finish(nil)
	}
	return err
}

func (s *clientStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		s.finish(err)
	}
	return err
}

// finish ends the call from RecvMsg or SendMsg (the caller's goroutine, after stream returned).
func (s *clientStream) finish(err error) {
	s.stop()
	s.end1(err)
}

// end1 ends the span and records the call, once.
func (s *clientStream) end1(err error) { s.once.Do(func() { s.end(s.ctx, err) }) }
