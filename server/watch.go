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

	err := s.watch.Watch(ctx, req, func(f watch.Frame) error { return stream.SendMsg(f) })
	if errors.Is(context.Cause(ctx), errStopping) {
		return status.Error(codes.Unavailable, "calsync is shutting down: resume from the last cursor you received")
	}
	return toStatus(ctx, s.log, err)
}

// frameCodec is the server's gRPC codec: protobuf, except that a
// [watch.Frame], a response encoded once for every stream that receives it,
// goes out as it is instead of being marshaled again per stream.
type frameCodec struct{ proto encoding.CodecV2 }

func newFrameCodec() frameCodec { return frameCodec{proto: encoding.GetCodecV2("proto")} }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(watch.Frame); ok {
		// A SliceBuffer is never returned to a pool, so the shared bytes
		// stay untouched.
		return mem.BufferSlice{mem.SliceBuffer(f)}, nil
	}
	return c.proto.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (frameCodec) Name() string { return "proto" }
