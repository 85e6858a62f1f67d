package client_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// recorder is a Watch handler that keeps what it was given.
type recorder struct {
	mu        sync.Mutex
	cursors   []string
	bookmarks []string
	resyncs   int
	snapshot  []*calsyncv1.CalendarEvent
}

func (r *recorder) handler() client.Handler {
	return client.Handler{
		OnChange: func(_ context.Context, c *calsyncv1.Change) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.cursors = append(r.cursors, c.GetCursor())
			return nil
		},
		OnBookmark: func(_ context.Context, b *calsyncv1.Bookmark) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.bookmarks = append(r.bookmarks, b.GetCursor())
			return nil
		},
		OnResync: func(_ context.Context, snapshot iter.Seq2[*calsyncv1.CalendarEvent, error]) error {
			var evs []*calsyncv1.CalendarEvent
			for ev, err := range snapshot {
				if err != nil {
					return err
				}
				evs = append(evs, ev)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resyncs++
			r.snapshot = evs
			return nil
		},
	}
}

func (r *recorder) changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cursors...)
}

func (r *recorder) firstBookmark() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bookmarks) == 0 {
		return ""
	}
	return r.bookmarks[0]
}

// runWatch runs Watch in the background until the test ends; the returned
// channel yields what Watch returned.
func runWatch(t *testing.T, c *client.Client, opts client.WatchOptions, h client.Handler) (stop func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Watch(ctx, opts, h) }()
	t.Cleanup(cancel)
	return cancel, errc
}

// TestWatchAcrossRestarts restarts calsync three times while a steady stream
// of postpress webhooks arrives over HTTP: the handler sees every change of
// the change log exactly once, in order. The second restart looks like a
// crash to the client: its connection is cut before calsync says anything.
func TestWatchAcrossRestarts(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.grpcAddr)
	c := newClient(t, px.Addr())
	var rec recorder
	var retries sync.Map
	_, done := runWatch(t, c, client.WatchOptions{
		NewBackoff: fastRetry,
		OnRetry:    func(err error, _ time.Duration) { retries.Store(status.Code(err), true) },
	}, rec.handler())
	waitFor(t, "the stream's first bookmark", func() bool { return rec.firstBookmark() != "" })

	// The sender retries every webhook until calsync answers 200, as
	// postpress does; a retry of a delivery whose answer was lost is a
	// duplicate and changes nothing, which the change log shows. It keeps
	// at most 8 webhooks ahead of the handler, so webhooks keep coming
	// until the end, restarts included.
	const webhooks, events, lead = 80, 8, 8
	httpAddr := ts.httpAddr
	var sent atomic.Int64
	senderDone := make(chan error, 1)
	go func() {
		start := time.Date(2030, 3, 1, 9, 0, 0, 0, time.UTC)
		for i := range webhooks {
			for len(rec.changes()) < i-lead {
				time.Sleep(time.Millisecond) // polls the handler's progress
			}
			e := postpressEvent{Event: postpress.EventUpdated, ID: fmt.Sprintf("evt-%d", i%events),
				Title: fmt.Sprintf("version %d", i), Start: start.Add(time.Duration(i%events) * time.Hour), Version: i}
			deadline := time.Now().Add(20 * time.Second)
			for {
				code, err := sendWebhook(context.Background(), httpAddr, e)
				if err == nil && code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					senderDone <- fmt.Errorf("webhook %d never accepted: %d %v", i, code, err)
					return
				}
				time.Sleep(5 * time.Millisecond) // postpress's retry pause, not synchronization
			}
			sent.Add(1)
		}
		senderDone <- nil
	}()
	for i, at := range []int{10, 30, 50} {
		waitFor(t, fmt.Sprintf("%d changes handled", at), func() bool { return len(rec.changes()) >= at })
		if n := sent.Load(); n == webhooks {
			t.Fatalf("all webhooks were accepted before restart %d: the restarts do not interrupt a stream", i)
		}
		if i == 1 {
			px.SetDown(true)
		}
		ts.Restart()
		px.SetDown(false)
	}
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	st := ts.Store()
	waitFor(t, "every delivery processed and handled", func() bool {
		stats, err := st.InboxStats(context.Background())
		if err != nil || stats.Pending > 0 {
			return false
		}
		b, err := st.ChangeBounds(context.Background())
		got := rec.changes()
		return err == nil && len(got) > 0 && watchtest.Decode(t, st, got[len(got)-1]) == b.Head
	})
	var got []store.Cursor
	for _, cur := range rec.changes() {
		got = append(got, watchtest.Decode(t, st, cur))
	}
	log := watchtest.Log(t, st, watchtest.Decode(t, st, rec.firstBookmark()))
	if len(log) < webhooks {
		t.Errorf("the change log holds %d changes for %d webhooks of distinct content", len(log), webhooks)
	}
	watchtest.CheckStream(t, "Watch across restarts", log, nil, got)
	if _, ok := retries.Load(codes.Unavailable); !ok {
		t.Error("Watch never reported an UNAVAILABLE it recovered from: the restarts did not reach it")
	}
	select {
	case err := <-done:
		t.Fatalf("Watch returned %v while calsync restarted", err)
	default:
	}
}

// TestWatchResyncsAfterCompaction: a watch whose cursor was compacted away
// while it was disconnected gets a snapshot through OnResync, then the live
// changes after it.
func TestWatchResyncsAfterCompaction(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	px := startProxy(t, ts.grpcAddr)
	c := newClient(t, px.Addr())
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	ev := func(n int, title string) *calsyncv1.CalendarEvent {
		return watchtest.Event(model.ProviderPostpress, cal, n, title)
	}
	watchtest.Commit(t, st, watchtest.Created(ev(0, "a")))
	var rec recorder
	runWatch(t, c, client.WatchOptions{NewBackoff: fastRetry, StartWithSnapshot: true}, rec.handler())
	waitFor(t, "the first snapshot", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.resyncs == 1 && len(rec.snapshot) == 1
	})
	watchtest.Commit(t, st, watchtest.Created(ev(1, "b")))
	waitFor(t, "a live change", func() bool { return len(rec.changes()) == 1 })

	px.SetDown(true)
	watchtest.Commit(t, st, watchtest.Created(ev(2, "c")))
	watchtest.Commit(t, st, watchtest.Deleted(ev(0, "a")))
	watchtest.Commit(t, st, watchtest.Updated(ev(1, "b"), ev(1, "b2")))
	if n, err := st.CompactChanges(context.Background(), time.Now().Add(time.Second)); err != nil || n == 0 {
		t.Fatalf("compaction removed %d changes: %v", n, err)
	}
	px.SetDown(false)
	waitFor(t, "a second snapshot", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.resyncs == 2
	})
	rec.mu.Lock()
	titles := map[string]bool{}
	for _, e := range rec.snapshot {
		titles[e.GetTitle()] = true
	}
	rec.mu.Unlock()
	if len(titles) != 2 || !titles["b2"] || !titles["c"] {
		t.Errorf("the resync's snapshot holds %v, want b2 and c", titles)
	}
	if got := rec.changes(); len(got) != 1 {
		t.Errorf("OnChange saw %d changes, want only the one before the disconnect: compacted changes cannot be replayed", len(got))
	}
	watchtest.Commit(t, st, watchtest.Created(ev(3, "d")))
	waitFor(t, "live changes after the resync", func() bool { return len(rec.changes()) == 2 })
}

// TestWatchRejectsForeignCursor: a cursor of another database, or a damaged
// one, ends Watch with ErrCursorRejected; it never restarts from now.
func TestWatchRejectsForeignCursor(t *testing.T) {
	ts := startServer(t)
	other := startServer(t)
	foreign := watch.NewCursorCodec(other.Store().ID()).Encode(0)
	c := newClient(t, ts.grpcAddr)
	for name, cursor := range map[string]string{"foreign": foreign, "malformed": "not-a-cursor"} {
		t.Run(name, func(t *testing.T) {
			cursors := &client.MemoryCursorStore{}
			cursors.Save(context.Background(), cursor)
			var rec recorder
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := c.Watch(ctx, client.WatchOptions{Cursors: cursors, NewBackoff: fastRetry, StartWithSnapshot: true}, rec.handler())
			if !errors.Is(err, client.ErrCursorRejected) || status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Watch = %v, want ErrCursorRejected with INVALID_ARGUMENT", err)
			}
			if saved, _ := cursors.Load(ctx); saved != cursor || rec.resyncs != 0 || len(rec.bookmarks) != 0 {
				t.Errorf("Watch moved on from a rejected cursor: saved %q, %d snapshots, %d bookmarks", saved, rec.resyncs, len(rec.bookmarks))
			}
		})
	}
}

// TestWatchNeedsOnResync: without OnResync, a compacted cursor is an error
// Watch returns, not a silent jump.
func TestWatchNeedsOnResync(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	cs := watchtest.Commit(t, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 0, "a")),
		watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 1, "b")))
	watchtest.Commit(t, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 2, "c")))
	if _, err := st.CompactChanges(context.Background(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	cursors := &client.MemoryCursorStore{}
	cursors.Save(context.Background(), watch.NewCursorCodec(st.ID()).Encode(cs[0]))
	c := newClient(t, ts.grpcAddr)
	err := c.Watch(context.Background(), client.WatchOptions{Cursors: cursors}, client.Handler{
		OnChange: func(context.Context, *calsyncv1.Change) error { return errors.New("no change expected") },
	})
	if !errors.Is(err, client.ErrResyncRequired) || status.Code(err) != codes.OutOfRange {
		t.Fatalf("Watch = %v, want ErrResyncRequired with OUT_OF_RANGE", err)
	}
}

// TestWatchHandlerErrorStops: a handler's error ends Watch and the change is
// not recorded, so the next Watch delivers it again.
func TestWatchHandlerErrorStops(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	cursors := client.NewFileCursorStore(filepath.Join(t.TempDir(), "cursor"))
	cursors.Save(context.Background(), watch.NewCursorCodec(st.ID()).Encode(0))
	cs := watchtest.Commit(t, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 0, "a")),
		watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 1, "b")))
	c := newClient(t, ts.grpcAddr)
	boom := errors.New("boom")
	var seen []store.Cursor
	h := client.Handler{OnChange: func(_ context.Context, ch *calsyncv1.Change) error {
		seen = append(seen, watchtest.Decode(t, st, ch.GetCursor()))
		if len(seen) == 2 {
			return boom
		}
		return nil
	}}
	if err := c.Watch(context.Background(), client.WatchOptions{Cursors: cursors}, h); !errors.Is(err, boom) {
		t.Fatalf("Watch = %v, want the handler's error", err)
	}
	saved, _ := cursors.Load(context.Background())
	if watchtest.Decode(t, st, saved) != cs[0] {
		t.Fatalf("cursor file holds %q, want the first change's cursor", saved)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.OnChange = func(_ context.Context, ch *calsyncv1.Change) error {
		seen = append(seen, watchtest.Decode(t, st, ch.GetCursor()))
		cancel()
		return nil
	}
	if err := c.Watch(ctx, client.WatchOptions{Cursors: cursors}, h); err != nil {
		t.Fatalf("Watch after cancel = %v, want nil", err)
	}
	if want := []store.Cursor{cs[0], cs[1], cs[1]}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("handled %v, want %v", seen, want)
	}
}

func TestFileCursorStore(t *testing.T) {
	dir := t.TempDir()
	f := client.NewFileCursorStore(filepath.Join(dir, "cursor"))
	ctx := context.Background()
	if got, err := f.Load(ctx); got != "" || err != nil {
		t.Fatalf("Load of a missing file = %q, %v; want empty", got, err)
	}
	for _, c := range []string{"first", "second"} {
		if err := f.Save(ctx, c); err != nil {
			t.Fatal(err)
		}
		if got, err := f.Load(ctx); got != c || err != nil {
			t.Fatalf("Load = %q, %v; want %q", got, err, c)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want only the cursor file (no temporary left)", len(entries))
	}
	if err := client.NewFileCursorStore(filepath.Join(dir, "missing", "cursor")).Save(ctx, "x"); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
}

// TestWatchResyncsWhenBehindRetention: a handler so slow that its stream
// falls behind the change log's retention (SUBSCRIBER_BEHIND_RETENTION) gets
// the changes it had in order, then a snapshot, then live changes.
func TestWatchResyncsWhenBehindRetention(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.Watch.TailSize, c.Watch.BatchSize = 8, 4 })
	st := ts.Store()
	// Windows of 64 KiB make the server's sends to a stalled handler
	// stop quickly, as a slow consumer's would.
	c, err := client.New(context.Background(), ts.grpcAddr,
		client.WithDialOptions(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	big := string(make([]byte, 8<<10))
	ev := func(n int) *calsyncv1.CalendarEvent {
		e := watchtest.Event(model.ProviderPostpress, cal, n, "e")
		e.Description = big
		return e
	}
	var rec recorder
	stalled, release := make(chan struct{}), make(chan struct{})
	h := rec.handler()
	onChange := h.OnChange
	h.OnChange = func(ctx context.Context, ch *calsyncv1.Change) error {
		if len(rec.changes()) == 0 {
			close(stalled)
			<-release
		}
		return onChange(ctx, ch)
	}
	var retried sync.Map
	runWatch(t, c, client.WatchOptions{NewBackoff: fastRetry, OnRetry: func(err error, _ time.Duration) { retried.Store(err.Error(), true) }}, h)
	waitFor(t, "the stream's first bookmark", func() bool { return rec.firstBookmark() != "" })
	watchtest.Commit(t, st, watchtest.Created(ev(0)))
	<-stalled
	for n := 1; n < 300; n++ {
		watchtest.Commit(t, st, watchtest.Created(ev(n)))
	}
	if _, err := st.CompactChanges(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitFor(t, "a resync", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.resyncs == 1
	})
	rec.mu.Lock()
	if len(rec.snapshot) != 300 {
		t.Errorf("the resync's snapshot holds %d events, want 300", len(rec.snapshot))
	}
	rec.mu.Unlock()
	before := rec.changes()
	if len(before) == 0 || len(before) >= 300 {
		t.Fatalf("OnChange saw %d changes before the resync, want some but not all of 300", len(before))
	}
	for i, cur := range before {
		if got := watchtest.Decode(t, st, cur); got != store.Cursor(i+1) {
			t.Fatalf("change %d before the resync has cursor %d: not the log's order", i, got)
		}
	}
	// SUBSCRIBER_BEHIND_RETENTION leads straight to the snapshot, without
	// a retry of the compacted cursor first.
	retried.Range(func(k, _ any) bool { t.Errorf("Watch retried after %s", k); return true })
	last := watchtest.Commit(t, st, watchtest.Created(ev(300)))
	waitFor(t, "the live change after the resync", func() bool {
		got := rec.changes()
		return len(got) == len(before)+1 && watchtest.Decode(t, st, got[len(got)-1]) == last[0]
	})
}

// BenchmarkFileCursorStoreSave measures what recording a cursor costs per
// handled change: two fsyncs.
func BenchmarkFileCursorStoreSave(b *testing.B) {
	f := client.NewFileCursorStore(filepath.Join(b.TempDir(), "cursor"))
	for b.Loop() {
		if err := f.Save(context.Background(), "AQIDBAUGBwgJAAAAAAAAAAEAAAAA"); err != nil {
			b.Fatal(err)
		}
	}
}

// countingStore records every cursor saved to it.
type countingStore struct {
	client.MemoryCursorStore
	mu    sync.Mutex
	saves []string
}

func (c *countingStore) Save(ctx context.Context, cursor string) error {
	c.mu.Lock()
	c.saves = append(c.saves, cursor)
	c.mu.Unlock()
	return c.MemoryCursorStore.Save(ctx, cursor)
}

// TestWatchSaveInterval: with a SaveInterval, a burst of changes is saved
// once, and the last one is saved when Watch returns.
func TestWatchSaveInterval(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	c := newClient(t, ts.grpcAddr)
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	cursors := &countingStore{}
	var rec recorder
	stop, done := runWatch(t, c, client.WatchOptions{Cursors: cursors, SaveInterval: time.Hour}, rec.handler())
	waitFor(t, "the stream's first bookmark", func() bool { return rec.firstBookmark() != "" })
	var changes []*calsyncv1.Change
	for n := range 5 {
		changes = append(changes, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, n, "e")))
	}
	log := watchtest.Commit(t, st, changes...)
	waitFor(t, "5 changes", func() bool { return len(rec.changes()) == 5 })
	cursors.mu.Lock()
	during := len(cursors.saves)
	cursors.mu.Unlock()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if during != 1 {
		t.Errorf("%d saves before Watch returned, want 1: the first bookmark's", during)
	}
	saved, _ := cursors.Load(context.Background())
	if watchtest.Decode(t, st, saved) != log[4] {
		t.Errorf("Watch returned with %q saved, want the last change's cursor", saved)
	}
}
