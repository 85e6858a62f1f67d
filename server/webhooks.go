package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
)

// webhookService takes provider webhooks over gRPC and, through the
// gateway, over POST /v1/webhooks/{provider}.
type webhookService struct {
	calsyncv1.UnimplementedWebhookServiceServer
	receiver *ingest.Receiver
	maxBytes int64
	log      *slog.Logger
	metrics  *metrics.Metrics
}

func (s *webhookService) IngestWebhook(ctx context.Context, req *calsyncv1.IngestWebhookRequest) (*calsyncv1.IngestWebhookResponse, error) {
	body := req.GetBody().GetData()
	if int64(len(body)) > s.maxBytes {
		s.metrics.Webhook(providerLabel(req.GetProvider()), metrics.WebhookTooLarge)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("webhook body exceeds %d bytes", s.maxBytes))
	}
	receipt, err := s.receiver.Receive(ctx, req.GetProvider(), body, headersOf(ctx))
	s.metrics.Webhook(providerLabel(req.GetProvider()), webhookOutcome(receipt.Duplicate, err))
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &calsyncv1.IngestWebhookResponse{
		DeliveryId: strconv.FormatInt(receipt.DeliveryID, 10),
		Duplicate:  receipt.Duplicate,
	}, nil
}

// headersOf turns incoming gRPC metadata (where the gateway puts the HTTP
// headers) back into HTTP headers for the providers' verifiers.
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
