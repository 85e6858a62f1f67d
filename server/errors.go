package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/store"
)

// toStatus is the one place where errors become gRPC statuses. Errors that
// already carry a status pass through; store sentinels map to their codes;
// anything else is logged with its cause and reaches the client as a bare
// INTERNAL, so no internal text ever leaks.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, store.ErrCompacted):
		return status.Error(codes.OutOfRange, "cursor is older than the change log's retention")
	case errors.Is(err, store.ErrFailedPrecondition):
		return status.Error(codes.FailedPrecondition, "not allowed in the current state")
	case errors.Is(err, store.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, "invalid argument")
	case errors.Is(err, store.ErrUnavailable):
		// UNAVAILABLE (503 over REST): clients and providers retry, and a
		// webhook is never answered 200 without its commit.
		return status.Error(codes.Unavailable, "database unavailable; retry later")
	case errors.Is(err, store.ErrClosed):
		return status.Error(codes.Unavailable, "server is shutting down")
	case errors.Is(err, ingest.ErrUnknownProvider):
		return status.Error(codes.NotFound, `unknown provider: expected "recall" or "postpress"`)
	case errors.Is(err, ingest.ErrNotConfigured):
		// UNAVAILABLE (503) makes the provider keep retrying until an
		// operator configures it; the message names what to set.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, ingest.ErrUnauthorized):
		// Not logged here: anyone can send these by the thousand. The
		// webhook service logs a sample and counts every one.
		return status.Error(codes.Unauthenticated, "webhook credentials are missing or invalid")
	case errors.Is(err, ingest.ErrNotResyncable):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	log.ErrorContext(ctx, "internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}

// invalidArgument is a client error whose message is safe to show.
func invalidArgument(msg string) error {
	return status.Error(codes.InvalidArgument, msg)
}
