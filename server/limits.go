package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits bound what clients can make the server hold. Zero fields mean no
// limit, except where a field says otherwise.
type Limits struct {
	// RequestTimeout is the longest a unary call may run; a client's shorter
	// deadline wins. A call past it ends with DEADLINE_EXCEEDED.
	RequestTimeout time.Duration
	// MaxWatchStreams caps the watch streams open at once (gRPC and REST
	// together); one more is refused with RESOURCE_EXHAUSTED.
	MaxWatchStreams int
	// Keepalive is the gRPC keepalive policy; zero fields take the defaults
	// of [DefaultKeepalive].
	Keepalive Keepalive
	// MaxStreamsPerConnection caps the gRPC streams (calls) open at once on
	// one connection, advertised to clients in HTTP/2 SETTINGS; a client
	// opening more waits for one to end.
	MaxStreamsPerConnection uint32
	// MaxHealthWatches caps the grpc.health.v1.Health/Watch streams open at
	// once. They need no credentials, so without a cap anyone could hold
	// memory with them; one more is refused with RESOURCE_EXHAUSTED.
	MaxHealthWatches int
	// HandshakeTimeout is the longest a new connection may take to finish
	// its TLS handshake and send its first request headers (gRPC: the
	// HTTP/2 preface); a slower or silent connection is closed. Zero takes
	// [DefaultHandshakeTimeout].
	HandshakeTimeout time.Duration
}

// DefaultHandshakeTimeout is Limits.HandshakeTimeout unless configured.
const DefaultHandshakeTimeout = 10 * time.Second

// Header and request body bounds of the public listeners. Headers carry
// tokens and webhook signatures, a few hundred bytes; REST calls other
// than webhooks carry no body or a small JSON object.
const (
	maxHeaderBytes  = 64 << 10
	maxRequestBytes = 64 << 10
)

func (l Limits) handshakeTimeout() time.Duration {
	if l.HandshakeTimeout <= 0 {
		return DefaultHandshakeTimeout
	}
	return l.HandshakeTimeout
}

// Keepalive is the gRPC server's keepalive policy. Watch streams live for
// hours, often behind load balancers that drop idle connections, so the
// server pings quiet connections and lets clients ping it, but not too
// often: a client pinging more often than MinTime is disconnected
// (GOAWAY "too_many_pings").
type Keepalive struct {
	// Time is how long a connection may be quiet before the server pings it.
	Time time.Duration
	// Timeout is how long the server waits for the ping's answer before it
	// closes the connection.
	Timeout time.Duration
	// MinTime is the shortest interval between client pings the server
	// tolerates.
	MinTime time.Duration
}

// DefaultKeepalive is the keepalive policy unless configured otherwise.
var DefaultKeepalive = Keepalive{Time: 30 * time.Second, Timeout: 10 * time.Second, MinTime: 10 * time.Second}

func (k Keepalive) withDefaults() Keepalive {
	if k.Time <= 0 {
		k.Time = DefaultKeepalive.Time
	}
	if k.Timeout <= 0 {
		k.Timeout = DefaultKeepalive.Timeout
	}
	if k.MinTime <= 0 {
		k.MinTime = DefaultKeepalive.MinTime
	}
	return k
}

// deadlineInterceptor gives every unary call at most d to run.
func deadlineInterceptor(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if d <= 0 {
			return handler(ctx, req)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		resp, err := handler(ctx, req)
		if err != nil && ctx.Err() == context.DeadlineExceeded && status.Code(err) != codes.DeadlineExceeded {
			// Whatever the handler made of the expired context, the client
			// is told the truth: the call ran out of time.
			return nil, status.Error(codes.DeadlineExceeded, fmt.Sprintf("the request took longer than the server's limit of %v", d))
		}
		return resp, err
	}
}

// The server's long-lived streaming methods: the API's watch, and the
// health service's, which needs no credentials.
const (
	watchMethod       = "/calsync.v1.CalendarService/WatchEvents"
	healthWatchMethod = "/grpc.health.v1.Health/Watch"
)

// streamLimiter refuses streams of one method beyond a cap. It is safe for
// concurrent use; a refused stream never reaches the handler.
type streamLimiter struct {
	method string
	// what names the streams in the refusal, as in "watch streams".
	what string
	max  int64
	open atomic.Int64
	// rejected counts each refused stream.
	rejected func()
}

func (l *streamLimiter) interceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != l.method {
			return handler(srv, ss)
		}
		if err := l.acquire(); err != nil {
			return err
		}
		defer l.release()
		return handler(srv, ss)
	}
}

// acquire takes a place for a stream, or fails with RESOURCE_EXHAUSTED
// when every place is taken. A successful acquire must be released.
func (l *streamLimiter) acquire() error {
	if l.open.Add(1) > l.max && l.max > 0 {
		l.open.Add(-1)
		l.rejected()
		return status.Error(codes.ResourceExhausted, fmt.Sprintf("too many %s are open (the limit is %d): retry later", l.what, l.max))
	}
	return nil
}

// release gives back a place taken by acquire.
func (l *streamLimiter) release() { l.open.Add(-1) }
