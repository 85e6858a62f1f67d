package watch

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of watch errors.
const ErrorDomain = "calsync.watch"

// Reasons carried in the google.rpc.ErrorInfo detail of watch errors, so
// clients branch on a stable string rather than on message text.
const (
	// ReasonCursorMalformed: the cursor was not produced by calsync
	// (INVALID_ARGUMENT).
	ReasonCursorMalformed = "CURSOR_MALFORMED"
	// ReasonCursorForeign: the cursor comes from another calsync store
	// (INVALID_ARGUMENT). Re-list, then watch from the list's cursor.
	ReasonCursorForeign = "CURSOR_FOREIGN"
	// ReasonInvalidRequest: a request field is invalid (INVALID_ARGUMENT).
	ReasonInvalidRequest = "INVALID_REQUEST"
	// ReasonCursorCompacted: the cursor is older than the change log's
	// retention (OUT_OF_RANGE). Re-list, then watch from the list's cursor.
	ReasonCursorCompacted = "CURSOR_COMPACTED"
	// ReasonCursorAhead: the cursor is ahead of the store's newest change
	// (UNAVAILABLE). Retry later, or against the store that issued it.
	ReasonCursorAhead = "CURSOR_AHEAD"
	// ReasonSubscriberBehind: the stream fell behind the change log's
	// retention (RESOURCE_EXHAUSTED). Re-list, then watch again.
	ReasonSubscriberBehind = "SUBSCRIBER_BEHIND_RETENTION"
)

// Error is a watch failure the client can act on. It carries its gRPC code
// and a google.rpc.ErrorInfo detail, so every transport (gRPC, NDJSON, SSE)
// reports the same machine-readable reason.
type Error struct {
	Code    codes.Code
	Reason  string
	Message string
	// Metadata adds facts to the ErrorInfo, such as the oldest cursor that
	// can still be resumed from.
	Metadata map[string]string
}

// Error returns the message a client sees.
func (e *Error) Error() string { return fmt.Sprintf("watch: %s (%s)", e.Message, e.Reason) }

// GRPCStatus makes an *Error a gRPC status with an ErrorInfo detail, so
// [status.FromError] and grpc-go turn it into the right code unchanged.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   e.Reason,
		Domain:   ErrorDomain,
		Metadata: e.Metadata,
	}); err == nil {
		return withInfo
	}
	return st
}

// Reason returns the ErrorInfo reason of a watch error received from calsync,
// or "" when it has none.
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

func errMalformedCursor() error {
	return &Error{Code: codes.InvalidArgument, Reason: ReasonCursorMalformed,
		Message: "after_cursor is malformed: pass a cursor exactly as calsync returned it"}
}

func errForeignCursor() error {
	return &Error{Code: codes.InvalidArgument, Reason: ReasonCursorForeign,
		Message: "after_cursor was issued by another calsync store: re-list, then watch from the list's cursor"}
}

func errInvalid(msg string) error {
	return &Error{Code: codes.InvalidArgument, Reason: ReasonInvalidRequest, Message: msg}
}

func errCompacted(oldest string) error {
	return &Error{Code: codes.OutOfRange, Reason: ReasonCursorCompacted,
		Message:  "after_cursor is older than the change log's retention: re-list, then watch from the list's cursor",
		Metadata: map[string]string{"oldest_cursor": oldest}}
}

func errAhead() error {
	return &Error{Code: codes.Unavailable, Reason: ReasonCursorAhead,
		Message: "after_cursor is ahead of this store's newest change: retry shortly"}
}

func errBehind(oldest string) error {
	return &Error{Code: codes.ResourceExhausted, Reason: ReasonSubscriberBehind,
		Message:  "the stream fell behind the change log's retention: re-list, then watch from the list's cursor",
		Metadata: map[string]string{"oldest_cursor": oldest}}
}
