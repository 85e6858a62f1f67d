package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
)

// webhookService takes provider webhooks over gRPC (IngestWebhook) and over
// POST /v1/webhooks/{provider} (httpHandler). Both end in ingest, so they
// verify, commit, count and answer alike.
type webhookService struct {
	calsyncv1.UnimplementedWebhookServiceServer
	receiver *ingest.Receiver
	maxBytes int64
	// timeout bounds an HTTP webhook as the gRPC deadline interceptor
	// bounds IngestWebhook; zero is no limit.
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics.Metrics
}

func (s *webhookService) IngestWebhook(ctx context.Context, req *calsyncv1.IngestWebhookRequest) (*calsyncv1.IngestWebhookResponse, error) {
	body := req.GetBody().GetData()
	if int64(len(body)) > s.maxBytes {
		s.metrics.Webhook(providerLabel(req.GetProvider()), metrics.WebhookTooLarge, 0)
		return nil, errTooLarge(s.maxBytes)
	}
	return s.ingest(ctx, req.GetProvider(), body, headersOf(ctx))
}

// ingest verifies one delivery and commits it to the inbox. Its error is a
// gRPC status.
func (s *webhookService) ingest(ctx context.Context, provider string, body []byte, h http.Header) (*calsyncv1.IngestWebhookResponse, error) {
	began := time.Now()
	receipt, err := s.receiver.Receive(ctx, provider, body, h)
	s.metrics.Webhook(providerLabel(provider), webhookOutcome(receipt.Duplicate, err), time.Since(began))
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &calsyncv1.IngestWebhookResponse{
		DeliveryId: strconv.FormatInt(receipt.DeliveryID, 10),
		Duplicate:  receipt.Duplicate,
	}, nil
}

func errTooLarge(max int64) error {
	return status.Error(codes.ResourceExhausted, fmt.Sprintf("webhook body exceeds %d bytes", max))
}

// headersOf turns incoming gRPC metadata back into HTTP headers for the
// providers' verifiers.
func headersOf(ctx context.Context) http.Header {
	md, _ := metadata.FromIncomingContext(ctx)
	h := make(http.Header, len(md))
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h
}

// httpHandler serves POST /v1/webhooks/{provider} in process. The gateway
// could route it to IngestWebhook, but only through its loopback gRPC
// connection — HTTP/2 framing, a second protobuf encoding and the whole
// interceptor chain per webhook, about a fifth of the server's CPU at
// thousands of webhooks a second. Answers are the gateway's own: the same
// JSON bodies and the same status codes, errors rendered by its error
// handler.
func (s *webhookService) httpHandler(gw *runtime.ServeMux) http.Handler {
	marshaler := jsonMarshaler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		provider := r.PathValue("provider")
		ctx := r.Context()
		if s.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.timeout)
			defer cancel()
		}
		began := time.Now()
		resp, err := s.serveHTTP(ctx, provider, w, r)
		if err == nil {
			if body, merr := marshaler.Marshal(resp); merr != nil {
				err = toStatus(ctx, s.log, merr)
			} else {
				w.Header().Set("Content-Type", marshaler.ContentType(resp))
				w.Write(body)
			}
		}
		code := status.Code(err)
		if lvl := slog.Level(logLevel(code)); s.log.Enabled(ctx, lvl) {
			s.log.Log(ctx, lvl, "finished call", "protocol", "http", "http.path", r.URL.Path,
				"grpc.code", code.String(), "grpc.time_ms", time.Since(began).Milliseconds())
		}
		if err != nil {
			if code == codes.ResourceExhausted {
				// The only RESOURCE_EXHAUSTED here is the size limit, which
				// HTTP has a code of its own for (the gateway would say 429).
				w = statusWriter{ResponseWriter: w, code: http.StatusRequestEntityTooLarge}
			}
			httpErrorHandler(ctx, gw, marshaler, w, r, err)
		}
	})
}

// serveHTTP reads the body within the size limit and ingests it.
func (s *webhookService) serveHTTP(ctx context.Context, provider string, w http.ResponseWriter, r *http.Request) (resp *calsyncv1.IngestWebhookResponse, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in handler", "panic", p)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	body, err := readBody(w, r, s.maxBytes)
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			s.metrics.Webhook(providerLabel(provider), metrics.WebhookTooLarge, 0)
		}
		return nil, err
	}
	resp, err = s.ingest(ctx, provider, body, r.Header)
	if err != nil && ctx.Err() == context.DeadlineExceeded && status.Code(err) != codes.DeadlineExceeded {
		return nil, status.Error(codes.DeadlineExceeded, fmt.Sprintf("the request took longer than the server's limit of %v", s.timeout))
	}
	return resp, err
}

// readBody reads a request body of at most max bytes; a larger one is
// RESOURCE_EXHAUSTED (413) before more of it is read than the limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errTooLarge(limit)
	}
	// Sized from Content-Length when given, so the body is read without
	// growing the buffer.
	buf := bytes.NewBuffer(make([]byte, 0, max(r.ContentLength, 512)+1))
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			return nil, errTooLarge(limit)
		}
		return nil, status.Error(codes.InvalidArgument, "could not read the request body")
	}
	return buf.Bytes(), nil
}
