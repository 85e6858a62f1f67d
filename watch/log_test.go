package watch_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// TestLogReplayFrames checks what a stream reading the change log (not the
// in-memory tail) receives: exactly the stored changes its filters keep, in
// order, each with its cursor, with the previous state only when asked for.
func TestLogReplayFrames(t *testing.T) {
	st := MustOpenStore(t)
	calA := watchtest.CalendarID(model.ProviderPostpress, 1)
	calB := watchtest.CalendarID(model.ProviderPostpress, 2)
	for i, cal := range []string{calA, calB, calA} {
		ev := watchtest.Event(model.ProviderPostpress, cal, i, "v1")
		next := proto.Clone(ev).(*calsyncv1.CalendarEvent)
		next.Title = "v2"
		watchtest.Commit(t, st, watchtest.Created(ev), watchtest.Updated(ev, next), watchtest.Deleted(next))
	}
	log := watchtest.Log(t, st, 0)
	// Everything committed so far is older than the tail; batches of 2
	// split the log's pages between matching and filtered changes.
	h := MustHub(t, st, watch.Config{TailSize: 1, BatchSize: 2})
	watchtest.Commit(t, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calB, 99, "later")))
	from := h.Cursors().Encode(0)
	updated := calsyncv1.ChangeType_CHANGE_TYPE_UPDATED

	for _, tt := range []struct {
		name string
		req  *calsyncv1.WatchEventsRequest
		keep func(store.ChangeRecord) bool
	}{
		{"All", &calsyncv1.WatchEventsRequest{AfterCursor: from}, nil},
		{"IncludePrevious", &calsyncv1.WatchEventsRequest{AfterCursor: from, IncludePrevious: true}, nil},
		{"Calendar", &calsyncv1.WatchEventsRequest{AfterCursor: from, CalendarIds: []string{calA}},
			func(r store.ChangeRecord) bool { return r.CalendarID == calA }},
		{"UpdatedWithPrevious", &calsyncv1.WatchEventsRequest{AfterCursor: from, IncludePrevious: true, ChangeTypes: []calsyncv1.ChangeType{updated}},
			func(r store.ChangeRecord) bool { return r.Type == updated }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := startWatch(ctx, h, tt.req, nil)
			if r.next(t).GetBookmark() == nil {
				t.Fatal("the stream did not start with a bookmark")
			}
			for _, rec := range log {
				if tt.keep != nil && !tt.keep(rec) {
					continue
				}
				want := &calsyncv1.Change{}
				if err := proto.Unmarshal(rec.Change, want); err != nil {
					t.Fatal(err)
				}
				want.Cursor = h.Cursors().Encode(rec.Cursor)
				if !tt.req.GetIncludePrevious() {
					want.PreviousEvent, want.PreviousCalendar = nil, nil
				}
				got := r.next(t).GetChange()
				if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
					t.Fatalf("change %d (-want +got):\n%s", rec.Cursor, diff)
				}
			}
		})
	}
}

// pageReads is a store that reports every change log page read, once it
// has been read, by the position it was read after.
type pageReads struct {
	store.Store
	done chan store.Cursor
}

func (s pageReads) VisitChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int, visit func(*store.ChangeRecord) error) error {
	err := s.Store.VisitChangePage(ctx, after, limit, maxBytes, visit)
	s.done <- after
	return err
}

// TestStalePageReadAheadIsReadAgain: a page read ahead while nothing
// followed in the log comes back empty. By the time the stream asks for it,
// the log has grown past the tail; the stream must read the page again, not
// take the stale empty one for "caught up" and wait for a commit that may
// never come.
func TestStalePageReadAheadIsReadAgain(t *testing.T) {
	inner := MustOpenStore(t)
	st := pageReads{Store: inner, done: make(chan store.Cursor, 100)}
	const batch = 4 // a page of the log is 4×BatchSize = 16 changes
	h := MustHub(t, st, watch.Config{TailSize: 8, BatchSize: batch, DefaultBookmarkInterval: time.Hour})
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	commitEvents(t, inner, cal, 0, 4*batch)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gate := make(chan struct{})
	r := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(0)}, gate)
	gate <- struct{}{}
	if r.next(t).GetBookmark() == nil {
		t.Fatal("the stream did not start with a bookmark")
	}
	// The stream reads the first page (full: the whole log) and the two
	// pages after it ahead, both empty, then waits at the gate to send.
	waitForReads(t, st.done, 0, 4*batch, 8*batch)
	// Now the log grows until the first page's end has left the tail.
	last := commitEvents(t, inner, cal, 4*batch, 10)
	close(gate)
	log := watchtest.Log(t, inner, 0)
	watchtest.CheckStream(t, "resumed", log, nil, r.changesUntil(t, inner, last[len(last)-1]))
}

// waitForReads waits until pages after each of the positions have been
// read.
func waitForReads(t *testing.T, done <-chan store.Cursor, after ...store.Cursor) {
	t.Helper()
	want := map[store.Cursor]bool{}
	for _, a := range after {
		want[a] = true
	}
	for len(want) > 0 {
		select {
		case a := <-done:
			delete(want, a)
		case <-time.After(10 * time.Second):
			t.Fatalf("pages after %v not read within 10s", want)
		}
	}
}
