package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// jsonMarshaler is the REST encoding: proto field names (snake_case, as in
// the .proto files) and every scalar and list present even when empty, so
// clients never have to guess whether a missing key means "empty".
func jsonMarshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}
}

// rawBodyMarshaler is the JSON marshaler, except that a request body bound
// to a google.api.HttpBody is taken byte for byte. Without it the gateway
// would parse a webhook's JSON body as HttpBody JSON and hand the service
// nothing, and signatures are computed over the exact bytes sent.
type rawBodyMarshaler struct {
	*runtime.JSONPb
}

// StreamContentType labels REST streams (WatchEvents) as newline-delimited
// JSON: one JSON object per line.
func (rawBodyMarshaler) StreamContentType(any) string { return mimeNDJSON }

// streamEnvelope is how the gateway frames each message of a REST stream
// before marshaling it: {"result": message}.
const streamEnvelope = "result"

// Marshal writes a stream message's envelope around the message's JSON
// directly. The generic path marshals the message, then has encoding/json
// parse and re-escape it into the envelope: a second pass over every
// message of every REST stream. Everything else is marshaled as usual.
func (m rawBodyMarshaler) Marshal(v any) ([]byte, error) {
	if r, ok := v.(*calsyncv1.IngestWebhookResponse); ok {
		if b, ok := appendIngestResponse(nil, r); ok {
			return b, nil
		}
	}
	if env, ok := v.(map[string]any); ok && len(env) == 1 {
		if msg, ok := env[streamEnvelope].(proto.Message); ok {
			data, err := m.JSONPb.Marshal(msg)
			if err != nil {
				return nil, err
			}
			const open = `{"` + streamEnvelope + `":`
			b := make([]byte, 0, len(open)+len(data)+1)
			b = append(append(append(b, open...), data...), '}')
			return b, nil
		}
	}
	return m.JSONPb.Marshal(v)
}

// appendIngestResponse appends the JSON of a webhook's answer, which every
// webhook gets, as protojson would write it but without its reflection; ok
// is false for a delivery id that would need escaping (ids are decimal).
func appendIngestResponse(b []byte, r *calsyncv1.IngestWebhookResponse) (_ []byte, ok bool) {
	id := r.GetDeliveryId()
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return nil, false
		}
	}
	b = append(b, `{"delivery_id":"`...)
	b = append(b, id...)
	b = append(b, `","duplicate":`...)
	b = strconv.AppendBool(b, r.GetDuplicate())
	return append(b, '}'), true
}

func (m rawBodyMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return &bodyDecoder{m: m.JSONPb, r: r}
}

// bodyDecoder decodes one request body. It has Token, so the generated
// handlers can refuse a JSON body followed by anything but white space
// ("unexpected data after request body") instead of ignoring the rest.
type bodyDecoder struct {
	m     *runtime.JSONPb
	r     io.Reader
	inner runtime.Decoder
}

func (d *bodyDecoder) Decode(v any) error {
	// The generated code passes the address of the request's body field,
	// which is itself a pointer.
	if field, ok := v.(**httpbody.HttpBody); ok {
		if body, ok := d.r.(webhookBody); ok {
			*field = &httpbody.HttpBody{Data: body.data}
			return nil
		}
		data, err := io.ReadAll(d.r)
		if err != nil {
			return err
		}
		*field = &httpbody.HttpBody{Data: data}
		return nil
	}
	d.inner = d.m.NewDecoder(d.r)
	return d.inner.Decode(v)
}

// Token reads the next JSON token after a decoded message; io.EOF says
// the body ended. A body taken byte for byte was read to its end.
func (d *bodyDecoder) Token() (json.Token, error) {
	if t, ok := d.inner.(interface{ Token() (json.Token, error) }); ok {
		return t.Token()
	}
	return nil, io.EOF
}

// incomingHeader forwards webhook authentication headers (Svix / Standard
// Webhooks and the postpress header) to gRPC metadata, and otherwise behaves
// as the gateway's default.
func incomingHeader(extra ...string) runtime.HeaderMatcherFunc {
	allowed := map[string]bool{}
	for _, h := range extra {
		allowed[textproto.CanonicalMIMEHeaderKey(h)] = true
	}
	return func(key string) (string, bool) {
		canonical := textproto.CanonicalMIMEHeaderKey(key)
		lower := strings.ToLower(key)
		if allowed[canonical] || strings.HasPrefix(lower, "svix-") || strings.HasPrefix(lower, "webhook-") {
			return lower, true
		}
		return runtime.DefaultHeaderMatcher(key)
	}
}

// statusWriter rewrites the HTTP status the gateway picked for an error.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w statusWriter) WriteHeader(int) { w.ResponseWriter.WriteHeader(w.code) }

// httpErrorHandler is the gateway's default error handler with calsync's
// few departures from the standard code → HTTP mapping: a compacted watch
// cursor is 410 Gone, as in HTTP caches and Kubernetes watches.
func httpErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if status.Code(err) == codes.OutOfRange {
		w = statusWriter{ResponseWriter: w, code: http.StatusGone}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// newGateway builds the REST gateway over a connection to the gRPC server,
// except for webhooks, which it hands to the service in process.
func newGateway(ctx context.Context, conn *grpc.ClientConn, webhooks calsyncv1.WebhookServiceServer, headers []string) (*runtime.ServeMux, error) {
	routes, err := newRouteMethods()
	if err != nil {
		return nil, err
	}
	mux := runtime.NewServeMux(
		runtime.WithRoutingErrorHandler(routes.routingErrorHandler),
		// A POST of a form is a POST: the gateway would otherwise serve it
		// as the GET of the same path, where 405 is the answer.
		runtime.WithDisablePathLengthFallback(),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, rawBodyMarshaler{jsonMarshaler()}),
		runtime.WithIncomingHeaderMatcher(incomingHeader(headers...)),
		runtime.WithOutgoingHeaderMatcher(noGRPCMetadata), runtime.WithOutgoingTrailerMatcher(noGRPCMetadata),
		runtime.WithErrorHandler(httpErrorHandler),
		runtime.WithHealthEndpointAt(grpc_health_v1.NewHealthClient(conn), "/healthz"),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		calsyncv1.RegisterCalendarServiceHandler,
		calsyncv1.RegisterDeliveryServiceHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return nil, fmt.Errorf("register gateway: %w", err)
		}
	}
	if err := mux.HandlePath(http.MethodPost, webhookPath, webhookRoute(mux, webhooks)); err != nil {
		return nil, fmt.Errorf("register gateway: %w", err)
	}
	return mux, nil
}

// limitWebhookBodies answers 413 to webhook bodies over max bytes before they
// reach the gateway, and hands the gateway the body it read. A body in a
// content coding (gzip...) is refused with 415 before anything is stored:
// signatures are over the bytes the provider meant, and a sender told at
// once can fix it, where a stored delivery could only be dead-lettered.
func limitWebhookBodies(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebhook(r) {
			next.ServeHTTP(w, r)
			return
		}
		if !identityEncoding(r.Header) {
			writeUnsupportedEncoding(w)
			return
		}
		if r.ContentLength > max {
			writeTooLarge(w, "webhook body", max)
			return
		}
		body, err := readWebhookBody(http.MaxBytesReader(w, r.Body, max), r.ContentLength, max)
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeTooLarge(w, "webhook body", max)
				return
			}
			http.Error(w, `{"code":3,"message":"could not read the request body"}`, http.StatusBadRequest)
			return
		}
		r.Body = webhookBody{Reader: bytes.NewReader(body), data: body}
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// limitRequestBodies answers 413 to a request other than a webhook whose
// body is over max bytes: API calls take no body or a small JSON object.
// It reads at most max+1 bytes of a body, and none of one whose declared
// length is already too large, so a client cannot make the server hold
// more than max bytes per request.
func limitRequestBodies(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebhook(r) || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > max {
			writeTooLarge(w, "request body", max)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			http.Error(w, `{"code":3,"message":"could not read the request body"}`, http.StatusBadRequest)
			return
		}
		if int64(len(body)) > max {
			writeTooLarge(w, "request body", max)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// isWebhook reports whether r is a webhook delivery.
func isWebhook(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, webhookPrefix)
}

// identityEncoding reports whether a request's body is in no content
// coding (Content-Encoding absent or "identity").
func identityEncoding(h http.Header) bool {
	for _, v := range h.Values("Content-Encoding") {
		for _, coding := range strings.Split(v, ",") {
			if c := strings.TrimSpace(coding); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}

func writeTooLarge(w http.ResponseWriter, what string, max int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	fmt.Fprintf(w, `{"code":%d,"message":"%s exceeds %d bytes","details":[]}`+"\n", codes.ResourceExhausted, what, max)
}

func writeUnsupportedEncoding(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	// Accept-Encoding on a 415 names the codings the server takes (RFC 9110).
	w.Header().Set("Accept-Encoding", "identity")
	w.WriteHeader(http.StatusUnsupportedMediaType)
	fmt.Fprintf(w, `{"code":%d,"message":"webhook bodies must not be compressed or otherwise content-encoded: send them as is (Content-Encoding: identity)","details":[]}`+"\n", codes.InvalidArgument)
}
