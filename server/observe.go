package server

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/watch"
)

// webhookOutcome names the outcome of an IngestWebhook call for metrics.
func webhookOutcome(duplicate bool, err error) string {
	switch {
	case err == nil && duplicate:
		return metrics.WebhookDuplicate
	case err == nil:
		return metrics.WebhookAccepted
	case errors.Is(err, ingest.ErrUnauthorized):
		return metrics.WebhookUnauthenticated
	case errors.Is(err, ingest.ErrUnknownProvider):
		return metrics.WebhookUnknownProvider
	case errors.Is(err, ingest.ErrNotConfigured):
		return metrics.WebhookNotConfigured
	case status.Code(err) == codes.ResourceExhausted:
		return metrics.WebhookTooLarge
	}
	return metrics.WebhookError
}

// watchEndReason classifies how a watch stream ended, for
// calsync_watch_streams_ended_total.
func watchEndReason(err error) string {
	st := status.Convert(err)
	switch st.Code() {
	case codes.OK, codes.Canceled:
		return "client"
	case codes.OutOfRange:
		return "cursor_compacted"
	case codes.InvalidArgument:
		return "invalid"
	case codes.ResourceExhausted:
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == watch.ReasonSubscriberBehind {
				return "behind_retention"
			}
		}
		return "error"
	case codes.Unavailable:
		for _, d := range st.Details() {
			if _, ok := d.(*errdetails.ErrorInfo); ok {
				return "unavailable"
			}
		}
		return "shutdown"
	}
	return "error"
}

// observeWatch counts how watch streams end. Streams refused by the stream
// limit never get here: they are counted as rejected.
func observeWatch(m *metrics.Metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		if info.FullMethod == watchMethod {
			if ss.Context().Err() != nil && status.Code(err) != codes.Unavailable {
				m.StreamEnded("client")
			} else {
				m.StreamEnded(watchEndReason(err))
			}
		}
		return err
	}
}
