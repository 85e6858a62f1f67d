package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/watch"
)

// errStopping ends watch streams when the server shuts down.
var errStopping = errors.New("server is stopping")

// WatchEvents streams committed changes; [watch.Hub.Watch] holds the
// guarantees. Streams end with UNAVAILABLE when shutdown begins, so clients
// resume, from their last cursor, on another instance or after the restart.
func (s *calendarService) WatchEvents(req *calsyncv1.WatchEventsRequest, stream grpc.ServerStreamingServer[calsyncv1.WatchEventsResponse]) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	// AfterFunc registers a callback rather than a goroutine: thousands of
	// open streams cost nothing extra here.
	defer context.AfterFunc(s.stopping, func() { cancel(errStopping) })()

	// Frames go to the transport stream itself when the interceptors
	// handed it over (see bareWatchStream).
	out := grpc.ServerStream(stream)
	if raw, ok := stream.Context().Value(rawStreamKey{}).(grpc.ServerStream); ok {
		out = raw
	}
	// One outgoing message per stream, reused: SendMsg encodes it before
	// returning, and a pointer passes as an interface without the copy a
	// slice needs, at every change of every stream.
	msg := new(outgoingFrame)
	err := s.watch.Watch(ctx, req, func(f watch.Frame) error {
		msg.frame = f
		err := out.SendMsg(msg)
		msg.frame = nil
		return err
	})
	if errors.Is(context.Cause(ctx), errStopping) {
		return status.Error(codes.Unavailable, "calsync is shutting down: resume from the last cursor you received")
	}
	return toStatus(ctx, s.log, err)
}

// rawStreamKey carries a WatchEvents call's transport stream through its
// context.
type rawStreamKey struct{}

// contextStream is a server stream with a context of its own.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s contextStream) Context() context.Context { return s.ctx }

// bareWatchStream, the outermost stream interceptor, hands WatchEvents its
// transport stream, so that the changes it sends skip the per-message work
// of the interceptors' stream wrappers: the metrics interceptor reads the
// clock and updates a labelled counter (grpc_server_msg_sent_total) for
// every message, which cost more than the send itself with 100 streams
// watching. calsync_watch_changes_sent_total counts those changes instead;
// calls are still counted, logged and limited as before.
func bareWatchStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != watchMethod {
			return handler(srv, ss)
		}
		return handler(srv, contextStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), rawStreamKey{}, ss)})
	}
}

// outgoingFrame is a [watch.Frame] on its way to [frameCodec].
type outgoingFrame struct{ frame watch.Frame }

// frameCodec is the server's gRPC codec: protobuf, except that a
// [watch.Frame], a response encoded once for every stream that receives it,
// goes out as it is instead of being marshaled again per stream.
type frameCodec struct{ proto encoding.CodecV2 }

func newFrameCodec() frameCodec { return frameCodec{proto: encoding.GetCodecV2("proto")} }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*outgoingFrame); ok {
		// A SliceBuffer is never returned to a pool, so the shared bytes
		// stay untouched.
		return mem.BufferSlice{mem.SliceBuffer(f.frame)}, nil
	}
	return c.proto.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (frameCodec) Name() string { return "proto" }
