package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// The google.rpc.ErrorInfo domain and reasons of WatchEvents errors, as the
// API documents them (README, "Watching changes").
const (
	errorDomain            = "calsync.watch"
	reasonCursorMalformed  = "CURSOR_MALFORMED"
	reasonCursorForeign    = "CURSOR_FOREIGN"
	reasonCursorCompacted  = "CURSOR_COMPACTED"
	reasonSubscriberBehind = "SUBSCRIBER_BEHIND_RETENTION"
)

var (
	// ErrCursorRejected is returned (wrapped, with calsync's status) by
	// [Client.Watch] when calsync refuses the cursor it resumes from because
	// the cursor is malformed or belongs to another calsync database. Watch
	// never restarts from "now" by itself, since that would skip changes:
	// delete the stored cursor deliberately (and re-list) to start afresh.
	ErrCursorRejected = errors.New("calsync rejected the watch cursor")
	// ErrResyncRequired is returned (wrapped) by [Client.Watch] when the
	// stored cursor is older than calsync's change log retention, or the
	// watch fell behind it, and the [Handler] has no OnResync to take a
	// fresh snapshot.
	ErrResyncRequired = errors.New("the watch must resynchronize but the handler has no OnResync")
)

// WatchOptions says what [Client.Watch] receives and where it keeps its
// place. The zero value watches every change from now, keeping the cursor
// in memory.
type WatchOptions struct {
	// CalendarIDs, Providers and ChangeTypes keep only matching changes;
	// empty matches everything.
	CalendarIDs []string
	Providers   []string
	ChangeTypes []calsyncv1.ChangeType
	// IncludePrevious fills Change.previous_event and previous_calendar.
	IncludePrevious bool
	// IncludeDeleted adds tombstones to the snapshots given to OnResync.
	IncludeDeleted bool
	// StartWithSnapshot makes a watch with no stored cursor begin with a
	// snapshot of the current state (OnResync) instead of from now.
	StartWithSnapshot bool
	// Cursors keeps the watch's position; nil keeps it in memory only, so
	// a new process starts again from now (or a snapshot).
	Cursors CursorStore
	// SaveInterval spaces the saves of the cursor after changes: 0 saves
	// after every change, so a crash repeats at most the change being
	// handled; a positive interval saves at most that often while changes
	// stream (a [FileCursorStore] save costs two fsyncs, milliseconds, which
	// would otherwise bound a catch-up), so a crash repeats at most the
	// changes handled since. Bookmarks, snapshots and the end of Watch
	// always save.
	SaveInterval time.Duration
	// BookmarkInterval is how often an idle stream gets a bookmark (and the
	// cursor is saved); 0 means the server's default, 15s.
	BookmarkInterval time.Duration
	// NewBackoff returns the policy of waits between reconnections; nil
	// means jittered exponential backoff from 250ms to 30s. It is reset
	// whenever a stream delivers something.
	NewBackoff func() backoff.BackOff
	// OnRetry, if set, is told of every failure Watch recovers from by
	// reconnecting, and how long it waits first (for logs).
	OnRetry func(err error, wait time.Duration)
}

// Handler receives what [Client.Watch] delivers. Its functions are called
// one at a time, from the goroutine that called Watch, never concurrently.
// An error returned by any of them stops Watch, which returns it; the change
// it was given is not recorded as handled, so the next Watch with the same
// [CursorStore] delivers it again.
type Handler struct {
	// OnChange is called for every change, in cursor order, exactly once
	// per change while Watch runs: reconnections resume after the last
	// change OnChange returned for. Required.
	OnChange func(ctx context.Context, c *calsyncv1.Change) error
	// OnResync is called when the changes since the watch's cursor can no
	// longer be replayed (the cursor is older than the change log's
	// retention, or the stream fell behind it), and for the first snapshot
	// of a watch with StartWithSnapshot. snapshot yields the current state
	// of every matching event, read at one instant; afterwards OnChange
	// continues with the changes after that instant. The handler should
	// treat the snapshot as the whole truth: an event it holds that is not
	// in the snapshot was deleted meanwhile.
	//
	// If the stream breaks during the snapshot, snapshot yields the error
	// last; OnResync should return it, and is called again with a new
	// snapshot after reconnecting. Without OnResync, Watch returns
	// [ErrResyncRequired] in these cases.
	OnResync func(ctx context.Context, snapshot iter.Seq2[*calsyncv1.CalendarEvent, error]) error
	// OnBookmark, if set, is called with every bookmark: a position up to
	// which no matching change exists. The bookmark that ends a snapshot
	// has SnapshotComplete set and comes after OnResync returned.
	OnBookmark func(ctx context.Context, b *calsyncv1.Bookmark) error
}

// Watch calls h for every change matching opts until ctx ends (then it
// returns nil) or a failure retrying cannot fix.
//
// What a handler can rely on:
//
//   - Order and exactly once, within one Watch call: OnChange sees changes
//     in cursor order with no gap and no duplicate across disconnects,
//     calsync restarts and UNAVAILABLE answers; Watch reconnects with
//     jittered exponential backoff and resumes after the last change a
//     handler function returned for.
//   - At least once across processes: the cursor is saved to opts.Cursors
//     after the handler returns (and when Watch returns), so a process
//     that dies between the two gets the last change again (with a
//     SaveInterval, the changes handled since the last save) from a new
//     Watch on the same store; no change is ever skipped. Make OnChange
//     idempotent (the change's cursor identifies it) if a repeat matters.
//   - Resynchronizing, never silently skipping: when calsync can no longer
//     replay the changes since the cursor (OUT_OF_RANGE, or
//     SUBSCRIBER_BEHIND_RETENTION), OnResync receives a fresh snapshot, and
//     live changes follow it.
//   - A foreign or malformed cursor (another database's, or damaged) is
//     returned as [ErrCursorRejected]; so are other permanent errors
//     (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ...) and
//     errors from opts.Cursors.
func (c *Client) Watch(ctx context.Context, opts WatchOptions, h Handler) (err error) {
	if h.OnChange == nil {
		return errors.New("client: Watch needs a Handler with OnChange")
	}
	cursors := opts.Cursors
	if cursors == nil {
		cursors = &MemoryCursorStore{}
	}
	cursor, err := cursors.Load(ctx)
	if err != nil {
		return fmt.Errorf("client: load watch cursor: %w", err)
	}
	w := &watcher{client: c, opts: opts, h: h, cursors: cursors, cursor: cursor, saved: cursor,
		resync: cursor == "" && opts.StartWithSnapshot}
	// Whatever ends Watch, the changes handled so far are recorded.
	defer func() {
		if ferr := w.flush(context.WithoutCancel(ctx)); ferr != nil && err == nil {
			err = ferr
		}
	}()
	retry := newBackoff(opts)
	for {
		progressed, err := w.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var handlerErr *handlerError
		if errors.As(err, &handlerErr) {
			return handlerErr.err
		}
		if progressed {
			retry.Reset()
		}
		switch classify(err) {
		case actionResync:
			if h.OnResync == nil {
				return fmt.Errorf("client: %w: %w", ErrResyncRequired, err)
			}
			// The next stream is a snapshot: a different request, so
			// it starts at once rather than after a backoff.
			w.resync = true
			continue
		case actionRejectCursor:
			return fmt.Errorf("client: %w: %w", ErrCursorRejected, err)
		case actionStop:
			return fmt.Errorf("client: watch: %w", err)
		}
		wait := retry.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("client: watch: giving up: %w", err)
		}
		if opts.OnRetry != nil {
			opts.OnRetry(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func newBackoff(opts WatchOptions) backoff.BackOff {
	if opts.NewBackoff != nil {
		return opts.NewBackoff()
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	return b
}

// watcher is the state of one Watch call across its streams.
type watcher struct {
	client  *Client
	opts    WatchOptions
	h       Handler
	cursors CursorStore
	// cursor is the position after the last change or bookmark a handler
	// returned for; empty before the first.
	cursor string
	// saved is the cursor last saved to cursors, at lastSave.
	saved    string
	lastSave time.Time
	// resync says the next stream must start with a snapshot.
	resync bool
}

// handlerError marks an error a handler or the cursor store returned, which
// ends Watch instead of being retried.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }

func (w *watcher) request() *calsyncv1.WatchEventsRequest {
	req := &calsyncv1.WatchEventsRequest{
		CalendarIds:     w.opts.CalendarIDs,
		Providers:       w.opts.Providers,
		ChangeTypes:     w.opts.ChangeTypes,
		IncludeDeleted:  w.opts.IncludeDeleted,
		IncludePrevious: w.opts.IncludePrevious,
	}
	if w.resync {
		req.InitialSnapshot = true
	} else {
		req.AfterCursor = w.cursor
	}
	if w.opts.BookmarkInterval > 0 {
		req.BookmarkInterval = durationpb.New(w.opts.BookmarkInterval)
	}
	return req
}

// stream runs one WatchEvents call until it fails. progressed says whether
// it received anything.
func (w *watcher) stream(ctx context.Context) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := w.client.calendars.WatchEvents(sctx, w.request())
	if err != nil {
		return false, err
	}
	recv := func() (*calsyncv1.WatchEventsResponse, error) {
		resp, err := s.Recv()
		if err == nil {
			progressed = true
		}
		return resp, err
	}
	if w.resync {
		if err := w.snapshot(ctx, recv); err != nil {
			return progressed, err
		}
	}
	for {
		resp, err := recv()
		if err != nil {
			return progressed, err
		}
		if bm := resp.GetBookmark(); bm != nil {
			if err := w.bookmark(ctx, bm); err != nil {
				return progressed, err
			}
			continue
		}
		ch := resp.GetChange()
		if ch == nil {
			// A kind of response this client does not know yet.
			continue
		}
		if ch.GetCursor() == "" {
			// Reconnecting would not help, and handling it would lose
			// the position.
			return progressed, &handlerError{errors.New("client: calsync sent a change without a cursor outside a snapshot")}
		}
		if err := w.h.OnChange(ctx, ch); err != nil {
			return progressed, &handlerError{err}
		}
		if err := w.advance(ctx, ch.GetCursor(), false); err != nil {
			return progressed, err
		}
	}
}

// snapshot hands the snapshot at the start of a stream to OnResync, then
// records the bookmark that completes it.
func (w *watcher) snapshot(ctx context.Context, recv func() (*calsyncv1.WatchEventsResponse, error)) error {
	var (
		done      bool
		streamErr error
		complete  *calsyncv1.Bookmark
	)
	events := func(yield func(*calsyncv1.CalendarEvent, error) bool) {
		for !done {
			resp, err := recv()
			if err != nil {
				done, streamErr = true, err
				yield(nil, err)
				return
			}
			if bm := resp.GetBookmark(); bm != nil {
				if bm.GetSnapshotComplete() {
					done, complete = true, bm
					return
				}
				continue
			}
			if !yield(resp.GetChange().GetEvent(), nil) {
				return
			}
		}
	}
	herr := w.h.OnResync(ctx, events)
	if streamErr != nil {
		return streamErr
	}
	if herr != nil {
		return &handlerError{herr}
	}
	// A handler that stopped reading early still gets live changes only
	// after the snapshot.
	for range events {
	}
	if streamErr != nil {
		return streamErr
	}
	w.resync = false
	return w.bookmark(ctx, complete)
}

func (w *watcher) bookmark(ctx context.Context, bm *calsyncv1.Bookmark) error {
	if w.h.OnBookmark != nil {
		if err := w.h.OnBookmark(ctx, bm); err != nil {
			return &handlerError{err}
		}
	}
	return w.advance(ctx, bm.GetCursor(), true)
}

// advance records that everything up to cursor was handled, saving it now
// if always is set or SaveInterval allows.
func (w *watcher) advance(ctx context.Context, cursor string, always bool) error {
	if cursor == "" {
		return nil
	}
	w.cursor = cursor
	if !always && w.opts.SaveInterval > 0 && time.Since(w.lastSave) < w.opts.SaveInterval {
		return nil
	}
	if err := w.flush(ctx); err != nil {
		return &handlerError{err}
	}
	return nil
}

// flush saves the cursor if it moved since the last save.
func (w *watcher) flush(ctx context.Context) error {
	if w.cursor == w.saved {
		return nil
	}
	if err := w.cursors.Save(ctx, w.cursor); err != nil {
		return fmt.Errorf("client: save watch cursor: %w", err)
	}
	w.saved, w.lastSave = w.cursor, time.Now()
	return nil
}

type action int

const (
	actionRetry action = iota
	actionResync
	actionRejectCursor
	actionStop
)

// classify decides what a failed stream calls for.
func classify(err error) action {
	st := status.Convert(err)
	switch reason(st) {
	case reasonCursorCompacted, reasonSubscriberBehind:
		return actionResync
	case reasonCursorForeign, reasonCursorMalformed:
		return actionRejectCursor
	}
	switch st.Code() {
	case codes.OutOfRange:
		return actionResync
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		// A stream cut by a restart, a full server, or a proxy's timeout.
		return actionRetry
	}
	return actionStop
}

// reason returns the ErrorInfo reason calsync put on a watch error.
func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return info.GetReason()
		}
	}
	return ""
}

func cloneMsg[M proto.Message](m M) M { return proto.Clone(m).(M) }
