package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/time/rate"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
)

// webhookService takes provider webhooks over gRPC and, through the
// gateway (in process, see inProcessWebhooks), over
// POST /v1/webhooks/{provider}.
type webhookService struct {
	calsyncv1.UnimplementedWebhookServiceServer
	receiver *ingest.Receiver
	maxBytes int64
	// timeout bounds a webhook the gateway calls in process, as the gRPC
	// deadline interceptor bounds the others; zero is no limit.
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics.Metrics
	// rejected logs a sample of the webhooks refused for their
	// credentials; metrics count every one.
	rejected rejectionLog
}

// rejectionLogInterval is the shortest time between two "webhook rejected"
// log lines.
const rejectionLogInterval = 10 * time.Second

// rejectionLog logs refused webhooks at most once per interval, each line
// saying how many were refused since the one before: refusals cost an
// unauthenticated sender nothing, and a flood of them must not become a
// flood of log lines. It is safe for concurrent use.
type rejectionLog struct {
	sometimes rate.Sometimes
	// since counts refusals not yet reported by a log line.
	since atomic.Int64
}

func (l *rejectionLog) record(ctx context.Context, log *slog.Logger, provider string, err error) {
	l.since.Add(1)
	l.sometimes.Do(func() {
		log.InfoContext(ctx, "webhook rejected", "provider", providerLabel(provider), "err", err,
			"rejected_since_last_line", l.since.Swap(0), "next_line_after", rejectionLogInterval.String())
	})
}

func (s *webhookService) IngestWebhook(ctx context.Context, req *calsyncv1.IngestWebhookRequest) (*calsyncv1.IngestWebhookResponse, error) {
	body := req.GetBody().GetData()
	if int64(len(body)) > s.maxBytes {
		s.metrics.Webhook(providerLabel(req.GetProvider()), metrics.WebhookTooLarge, 0)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("webhook body exceeds %d bytes", s.maxBytes))
	}
	began := time.Now()
	provider := req.GetProvider()
	receipt, err := s.receiver.Receive(ctx, provider, body, headersOf(ctx))
	s.metrics.Webhook(providerLabel(provider), webhookOutcome(receipt.Duplicate, err), time.Since(began))
	if errors.Is(err, ingest.ErrUnauthorized) {
		s.rejected.record(ctx, s.log, provider, err)
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &calsyncv1.IngestWebhookResponse{
		DeliveryId: strconv.FormatInt(receipt.DeliveryID, 10),
		Duplicate:  receipt.Duplicate,
	}, nil
}

// httpHeadersKey carries a webhook's HTTP headers through its context when
// it came over HTTP (see webhookRoute).
type httpHeadersKey struct{}

// headersOf returns the headers a webhook came with, for the providers'
// verifiers: its HTTP headers, or a gRPC call's metadata as HTTP headers.
func headersOf(ctx context.Context) http.Header {
	if h, ok := ctx.Value(httpHeadersKey{}).(http.Header); ok {
		return h
	}
	md, _ := metadata.FromIncomingContext(ctx)
	h := make(http.Header, len(md))
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h
}

// webhookRoute serves POST /v1/webhooks/{provider} on the gateway's mux as
// the generated handler would (the same body decoding, the same error
// handler and response marshaler), without its per-request work that
// webhooks do not use: copying every header into gRPC metadata, which the
// verifiers then turned back into headers, and server metadata to forward
// (the in-process service sets none). The headers reach the service
// through the context (headersOf). A Grpc-Timeout header is not honoured
// here: webhooks are bounded by the server's own request deadline.
func webhookRoute(mux *runtime.ServeMux, webhooks calsyncv1.WebhookServiceServer) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		// The request's context ends when this handler returns, so the
		// call needs no cancel of its own.
		ctx := context.WithValue(r.Context(), httpHeadersKey{}, r.Header)
		in, out := runtime.MarshalerForRequest(mux, r)
		req := &calsyncv1.IngestWebhookRequest{Provider: params["provider"]}
		if err := in.NewDecoder(r.Body).Decode(&req.Body); err != nil && !errors.Is(err, io.EOF) {
			runtime.HTTPError(ctx, mux, out, w, r, status.Errorf(codes.InvalidArgument, "%v", err))
			return
		}
		resp, err := webhooks.IngestWebhook(ctx, req)
		if err != nil {
			runtime.HTTPError(ctx, mux, out, w, r, err)
			return
		}
		if m, ok := out.(rawBodyMarshaler); ok {
			// What ForwardResponseMessage writes when, as here, the
			// context holds no server metadata (so no headers or
			// trailers to forward) and no response option is set.
			if b, ok := appendIngestResponse(nil, resp); ok {
				w.Header().Set("Content-Type", m.ContentType(resp))
				_, _ = w.Write(b)
				return
			}
		}
		runtime.ForwardResponseMessage(ctx, mux, out, w, r, resp)
	}
}

// inProcessWebhooks is the webhook service as the gateway calls it: in
// process (webhookRoute), not through its loopback
// gRPC connection, which would add HTTP/2 framing, a second protobuf
// encoding and the interceptor chain to every webhook — about a fifth of
// the server's CPU at thousands of webhooks a second. Direct calls skip
// gRPC's interceptors, so this applies what they would: the request
// deadline, panic recovery and the finished-call log. (Webhooks need no
// API token, and the service counts them itself.)
type inProcessWebhooks struct {
	*webhookService
}

func (s inProcessWebhooks) IngestWebhook(ctx context.Context, req *calsyncv1.IngestWebhookRequest) (resp *calsyncv1.IngestWebhookResponse, err error) {
	began := time.Now()
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in handler", "panic", p)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		code := status.Code(err)
		if lvl := slog.Level(logLevel(code)); s.log.Enabled(ctx, lvl) {
			s.log.Log(ctx, lvl, "finished call", "protocol", "http", "grpc.service", "calsync.v1.WebhookService",
				"grpc.method", "IngestWebhook", "grpc.code", code.String(), "grpc.time_ms", time.Since(began).Milliseconds())
		}
	}()
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	resp, err = s.webhookService.IngestWebhook(ctx, req)
	if err != nil && ctx.Err() == context.DeadlineExceeded && status.Code(err) != codes.DeadlineExceeded {
		err = status.Error(codes.DeadlineExceeded, fmt.Sprintf("the request took longer than the server's limit of %v", s.timeout))
	}
	return resp, err
}

// webhookBody is a webhook's body once limitWebhookBodies has read it: the
// request's Body, readable as usual, whose bytes the gateway's decoder
// takes as they are (rawBodyMarshaler) instead of reading them into a
// second copy.
type webhookBody struct {
	*bytes.Reader
	data []byte
}

func (webhookBody) Close() error { return nil }

// readWebhookBody reads a body of at most max bytes (r is already limited
// to that) in one buffer sized from the request's Content-Length when it
// gives one: io.ReadAll would start at 512 bytes and copy the body as it
// grows.
func readWebhookBody(r io.Reader, contentLength, max int64) ([]byte, error) {
	size := int64(512)
	if contentLength > 0 {
		// One byte more, so the read that reports EOF needs no growth.
		size = min(contentLength, max) + 1
	}
	buf := make([]byte, 0, size)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}
