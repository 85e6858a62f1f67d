package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// Watch over REST. The gateway streams WatchEvents as newline-delimited JSON
// by default and as Server-Sent Events when the client accepts
// text/event-stream; in both, every message is flushed as it is sent.
const (
	watchPath       = "/v1/events:watch"
	mimeEventStream = "text/event-stream"
	mimeNDJSON      = "application/x-ndjson"
)

// sseMarshaler writes WatchEvents responses as Server-Sent Events:
//
//	id: <cursor>
//	event: change | bookmark
//	data: <the Change or Bookmark as JSON>
//
// The id is the cursor, so a browser's EventSource resumes by itself: it
// reconnects with Last-Event-ID, which [watchRequests] turns into
// after_cursor. Changes of an initial snapshot carry no id (a snapshot is
// not resumable part way); the bookmark that completes it does. A failure is
// an "error" event whose data is the google.rpc.Status as JSON.
type sseMarshaler struct {
	*runtime.JSONPb
}

func (sseMarshaler) ContentType(any) string { return mimeEventStream }

// Delimiter ends an event with the blank line SSE requires (each event's
// own lines end in a newline already).
func (sseMarshaler) Delimiter() []byte { return []byte("\n") }

func (m sseMarshaler) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case map[string]any: // a stream message: {"result": response}
		if resp, ok := v["result"].(*calsyncv1.WatchEventsResponse); ok {
			return m.event(resp)
		}
	case map[string]proto.Message: // a stream's final error: {"error": status}
		if st, ok := v["error"]; ok {
			return m.errorEvent(st)
		}
	case proto.Message: // an error before the stream started
		return m.errorEvent(v)
	}
	return nil, fmt.Errorf("server-sent events cannot carry %T", v)
}

func (m sseMarshaler) event(resp *calsyncv1.WatchEventsResponse) ([]byte, error) {
	var (
		id, name string
		body     proto.Message
	)
	switch k := resp.GetKind().(type) {
	case *calsyncv1.WatchEventsResponse_Change:
		id, name, body = k.Change.GetCursor(), "change", k.Change
	case *calsyncv1.WatchEventsResponse_Bookmark:
		id, name, body = k.Bookmark.GetCursor(), "bookmark", k.Bookmark
	default:
		return nil, fmt.Errorf("empty watch response")
	}
	data, err := m.JSONPb.Marshal(body)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	b.WriteString("event: " + name + "\ndata: ")
	b.Write(data) // protojson writes no newlines unless asked for
	b.WriteByte('\n')
	return b.Bytes(), nil
}

func (m sseMarshaler) errorEvent(st proto.Message) ([]byte, error) {
	data, err := m.JSONPb.Marshal(st)
	if err != nil {
		return nil, err
	}
	return append(append([]byte("event: error\ndata: "), data...), '\n'), nil
}

// noGRPCMetadata keeps the gRPC call's metadata out of REST answers. The
// services set none for HTTP clients, and the gRPC transport's own
// (content-type: application/grpc) would otherwise reach every answer,
// streams included, as Grpc-Metadata-Content-Type, confusing browsers and
// proxies about what they receive.
func noGRPCMetadata(string) (string, bool) { return "", false }

// streamCodeKey carries a *streamCode through a watch request's context.
type streamCodeKey struct{}

// streamCode is the gRPC code a REST stream failed with, recorded by
// [streamErrorHandler] so [goneWriter] can pick the HTTP status.
type streamCode struct{ code atomic.Uint32 }

// streamErrorHandler is the gateway's default stream error handler that also
// records the code for the response writer.
func streamErrorHandler(ctx context.Context, err error) *status.Status {
	st := runtime.DefaultStreamErrorHandler(ctx, err)
	if sc, ok := ctx.Value(streamCodeKey{}).(*streamCode); ok {
		sc.code.Store(uint32(st.Code()))
	}
	return st
}

// goneWriter answers 410 Gone, not the gateway's 400, when a watch fails
// with OUT_OF_RANGE before its first message: the cursor is compacted, as
// in HTTP caches and Kubernetes watches. EventSource stops retrying on it.
type goneWriter struct {
	http.ResponseWriter
	sc *streamCode
}

func (w goneWriter) WriteHeader(code int) {
	if code == http.StatusBadRequest && codes.Code(w.sc.code.Load()) == codes.OutOfRange {
		code = http.StatusGone
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush.
func (w goneWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// watchRequests adapts REST watch requests before the gateway sees them: an
// Accept that lists text/event-stream selects Server-Sent Events, and an
// EventSource's Last-Event-ID resumes after that cursor (replacing any
// after_cursor or initial_snapshot of the original URL, which EventSource
// reuses on every reconnect).
func watchRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != watchPath {
			next.ServeHTTP(w, r)
			return
		}
		sc := &streamCode{}
		r = r.Clone(context.WithValue(r.Context(), streamCodeKey{}, sc))
		for _, accept := range r.Header.Values("Accept") {
			if strings.Contains(accept, mimeEventStream) {
				r.Header.Set("Accept", mimeEventStream)
				break
			}
		}
		if last := r.Header.Get("Last-Event-ID"); last != "" {
			q := r.URL.Query()
			q.Set("after_cursor", last)
			q.Del("initial_snapshot")
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(goneWriter{ResponseWriter: w, sc: sc}, r)
	})
}
