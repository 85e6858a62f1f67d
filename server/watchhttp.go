package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/watch"
)

// Watch over REST: GET /v1/events:watch streams WatchEvents as
// newline-delimited JSON by default, one {"result": response} object per
// line, and as Server-Sent Events when the client accepts
// text/event-stream:
//
//	id: <cursor>
//	event: change | bookmark
//	data: <the Change or Bookmark as JSON>
//
// The id is the cursor, so a browser's EventSource resumes by itself: it
// reconnects with Last-Event-ID, which is taken as after_cursor (replacing
// any after_cursor or initial_snapshot of the URL, which EventSource reuses
// on every reconnect). Changes of an initial snapshot carry no id (a
// snapshot is not resumable part way); the bookmark that completes it does.
// A failure is {"error": status} in NDJSON and an "error" event in SSE,
// whose data is the google.rpc.Status as JSON; before the stream's first
// message it also sets the HTTP status (410 Gone for a compacted cursor, as
// in HTTP caches and Kubernetes watches: EventSource stops retrying on it).
const (
	watchPath       = "/v1/events:watch"
	mimeEventStream = "text/event-stream"
	mimeNDJSON      = "application/x-ndjson"
	mimeJSON        = "application/json"
)

// watchHTTP serves REST watch streams in process, straight from the hub:
// every change is encoded to JSON once and the same bytes go to every REST
// stream that sends it, and a stream writes to its connection once per
// batch of changes, not once per change. (Through the gateway, each stream
// was a loopback gRPC call that decoded and re-encoded every change.) It
// applies what the gRPC interceptors apply to WatchEvents: the stream
// limit, the finished-call log and the streams-ended metric; the API's
// credentials are checked in front of it ([authenticator.requireHTTPAuth]).
type watchHTTP struct {
	hub     *watch.Hub
	limiter *streamLimiter
	metrics *metrics.Metrics
	log     *slog.Logger
	// stopping is done when shutdown begins: streams then end with
	// UNAVAILABLE, so clients resume elsewhere.
	stopping context.Context
	// json encodes errors as the REST API does.
	json protojson.MarshalOptions
}

// watchQueryFilter says no query parameter is bound to the path.
var watchQueryFilter = utilities.NewDoubleArray(nil)

func (h *watchHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	sink := &restSink{w: w, rc: http.NewResponseController(w), sse: acceptsEventStream(r), json: h.json}
	req := &calsyncv1.WatchEventsRequest{}
	if err := runtime.PopulateQueryParameters(req, r.URL.Query(), watchQueryFilter); err != nil {
		// Refused before any stream exists: the status alone, as the
		// REST API answers every request it cannot parse.
		sink.refuse(status.New(codes.InvalidArgument, err.Error()))
		h.metrics.StreamEnded("invalid")
		return
	}
	err := h.serve(r, req, sink)
	st := status.Convert(err)
	sink.fail(st)
	switch {
	case r.Context().Err() != nil && st.Code() != codes.Unavailable:
		h.metrics.StreamEnded("client")
	case st.Code() != codes.ResourceExhausted || sink.started:
		// Streams refused by the limit are counted as rejected.
		h.metrics.StreamEnded(watchEndReason(err))
	}
	if lvl := slog.Level(logLevel(st.Code())); h.log.Enabled(r.Context(), lvl) {
		h.log.Log(r.Context(), lvl, "finished call", "protocol", "http", "grpc.service", "calsync.v1.CalendarService",
			"grpc.method", "WatchEvents", "grpc.code", st.Code().String(), "grpc.time_ms", time.Since(began).Milliseconds())
	}
}

// serve runs one stream and returns how it ended, as a gRPC status error.
func (h *watchHTTP) serve(r *http.Request, req *calsyncv1.WatchEventsRequest, sink *restSink) error {
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		req.AfterCursor, req.InitialSnapshot = last, false
	}
	if err := h.limiter.acquire(); err != nil {
		return err
	}
	defer h.limiter.release()

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer context.AfterFunc(h.stopping, func() { cancel(errStopping) })()
	err := h.hub.WatchJSON(ctx, req, sink)
	if errors.Is(context.Cause(ctx), errStopping) {
		return status.Error(codes.Unavailable, "calsync is shutting down: resume from the last cursor you received")
	}
	return toStatus(ctx, h.log, err)
}

// acceptsEventStream reports whether a request asks for Server-Sent Events.
func acceptsEventStream(r *http.Request) bool {
	for _, accept := range r.Header.Values("Accept") {
		if strings.Contains(accept, mimeEventStream) {
			return true
		}
	}
	return false
}

// restFlushBytes is how much a REST stream buffers before it writes to its
// connection within a batch, bounding what one stream holds.
const restFlushBytes = 32 << 10

// restBuffers holds the buffers REST streams fill between flushes.
var restBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, restFlushBytes+restFlushBytes/2)
	return &b
}}

// restSink writes a watch stream's messages as NDJSON or SSE. The first
// message writes the 200 and its content type; buffered messages go out on
// Flush, or once restFlushBytes are waiting.
type restSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	sse     bool
	json    protojson.MarshalOptions
	started bool
	buf     []byte
}

func (s *restSink) Send(m watch.Message) error {
	if !s.started {
		s.started = true
		ct := mimeNDJSON
		if s.sse {
			ct = mimeEventStream
		}
		s.w.Header().Set("Content-Type", ct)
		s.w.WriteHeader(http.StatusOK)
	}
	if s.buf == nil {
		s.buf = *restBuffers.Get().(*[]byte)
	}
	s.buf = appendMessage(s.buf, s.sse, m)
	if len(s.buf) >= restFlushBytes {
		return s.write()
	}
	return nil
}

func (s *restSink) write() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf)
	// The buffer goes back to the pool between batches: thousands of
	// mostly idle streams hold none.
	if cap(s.buf) <= 2*restFlushBytes {
		b := s.buf[:0]
		restBuffers.Put(&b)
	}
	s.buf = nil
	return err
}

func (s *restSink) Flush() error {
	if err := s.write(); err != nil {
		return err
	}
	return s.rc.Flush()
}

// fail ends the stream with st, unless it ended without error: before the
// first message it also sets the HTTP status and content type.
func (s *restSink) fail(st *status.Status) {
	if st.Code() == codes.OK {
		s.Flush()
		return
	}
	data := s.statusJSON(st)
	if !s.started {
		ct := mimeJSON
		if s.sse {
			ct = mimeEventStream
		}
		code := runtime.HTTPStatusFromCode(st.Code())
		if st.Code() == codes.OutOfRange {
			code = http.StatusGone
		}
		s.w.Header().Set("Content-Type", ct)
		s.w.WriteHeader(code)
		s.started = true
	}
	s.buf = appendError(s.buf, s.sse, data)
	s.Flush()
}

// statusJSON encodes a status as the REST API does; in NDJSON, compact, as
// the stream's other lines.
func (s *restSink) statusJSON(st *status.Status) []byte {
	data, err := s.json.Marshal(st.Proto())
	if err != nil {
		return []byte(`{"code": 13, "message": "failed to marshal error message"}`)
	}
	if !s.sse {
		var b bytes.Buffer
		if json.Compact(&b, data) == nil {
			data = b.Bytes()
		}
	}
	return data
}

// refuse answers a request that starts no stream with st: its HTTP status
// and the status as JSON (in SSE, as an error event).
func (s *restSink) refuse(st *status.Status) {
	data, err := s.json.Marshal(st.Proto())
	if err != nil {
		data = []byte(`{"code": 13, "message": "failed to marshal error message"}`)
	}
	if s.sse {
		s.w.Header().Set("Content-Type", mimeEventStream)
		data = appendError(nil, true, data)
	} else {
		s.w.Header().Set("Content-Type", mimeJSON)
	}
	s.w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	s.w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	s.w.Write(data)
}

// appendMessage appends one stream message in NDJSON or SSE.
func appendMessage(b []byte, sse bool, m watch.Message) []byte {
	kind := "change"
	if m.Bookmark {
		kind = "bookmark"
	}
	if !sse {
		b = append(b, `{"result":{"`...)
		b = append(b, kind...)
		b = append(b, `":`...)
		b = append(b, m.JSON...)
		return append(b, "}}\n"...)
	}
	if m.Cursor != "" {
		b = append(b, "id: "...)
		b = append(b, m.Cursor...)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, kind...)
	b = append(b, "\ndata: "...)
	b = append(b, m.JSON...) // protojson writes no newlines unless asked for
	return append(b, "\n\n"...)
}

// appendError appends a stream's final error, a google.rpc.Status as JSON.
func appendError(b []byte, sse bool, st []byte) []byte {
	if !sse {
		b = append(b, `{"error":`...)
		b = append(b, st...)
		return append(b, "}\n"...)
	}
	b = append(b, "event: error\ndata: "...)
	b = append(b, st...)
	return append(b, "\n\n"...)
}

// noGRPCMetadata keeps the gRPC call's metadata out of REST answers. The
// services set none for HTTP clients, and the gRPC transport's own
// (content-type: application/grpc) would otherwise reach every answer as
// Grpc-Metadata-Content-Type, confusing browsers and proxies about what they
// receive.
func noGRPCMetadata(string) (string, bool) { return "", false }
