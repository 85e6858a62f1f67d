package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// testServer is a calsync server on loopback over a SQLite file or a
// PostgreSQL database.
type testServer struct {
	path   string
	st     store.Store
	srv    *server.Server
	client calsyncv1.CalendarServiceClient
	stop   func()
}

// testWatchConfig keeps bookmarks and future-cursor waits short.
func testWatchConfig() watch.Config {
	return watch.Config{MinBookmarkInterval: 20 * time.Millisecond, FutureCursorWait: 200 * time.Millisecond}
}

// mustStartServer opens the database at path (a SQLite file, a new
// temporary one when empty, or a PostgreSQL URL) and serves it on free ports until the test ends or stop is called.
func mustStartServer(tb testing.TB, path string, wcfg watch.Config) *testServer {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "calsync.db")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := testdb.OpenAt(path)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	srv, err := server.New(server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Watch: wcfg},
		server.Deps{
			Store:     db,
			Logger:    log,
			Receiver:  ingest.NewReceiver(db, ingest.ReceiverConfig{}),
			Processor: ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log}),
		})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		tb.Fatalf("start: %v", err)
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	var once sync.Once
	ts := &testServer{path: path, st: db, srv: srv, client: calsyncv1.NewCalendarServiceClient(conn)}
	ts.stop = func() {
		once.Do(func() {
			srv.Shutdown(ctx)
			conn.Close()
			db.Close()
		})
	}
	tb.Cleanup(ts.stop)
	return ts
}

// watcher is a gRPC WatchEvents stream under test.
type watcher struct {
	tb     testing.TB
	st     store.Store
	stream grpc.ServerStreamingClient[calsyncv1.WatchEventsResponse]
	cancel context.CancelFunc
}

func (ts *testServer) watch(tb testing.TB, req *calsyncv1.WatchEventsRequest) *watcher {
	tb.Helper()
	return ts.watchWith(tb, ts.client, req)
}

// smallWindowClient is a client on its own connection whose flow-control
// windows stay at 64 KiB, so a stream it does not read stalls the server's
// sends quickly.
func (ts *testServer) smallWindowClient(tb testing.TB) calsyncv1.CalendarServiceClient {
	tb.Helper()
	conn, err := grpc.NewClient(ts.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return calsyncv1.NewCalendarServiceClient(conn)
}

func (ts *testServer) watchWith(tb testing.TB, client calsyncv1.CalendarServiceClient, req *calsyncv1.WatchEventsRequest) *watcher {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	stream, err := client.WatchEvents(ctx, req)
	if err != nil {
		tb.Fatalf("WatchEvents: %v", err)
	}
	return &watcher{tb: tb, st: ts.st, stream: stream, cancel: cancel}
}

// mustWatch opens a stream and waits for its first bookmark, after which
// every commit reaches it; it returns the bookmark's position.
func (ts *testServer) mustWatch(tb testing.TB, req *calsyncv1.WatchEventsRequest) (*watcher, store.Cursor) {
	tb.Helper()
	return ts.mustWatchWith(tb, ts.client, req)
}

func (ts *testServer) mustWatchWith(tb testing.TB, client calsyncv1.CalendarServiceClient, req *calsyncv1.WatchEventsRequest) (*watcher, store.Cursor) {
	tb.Helper()
	w := ts.watchWith(tb, client, req)
	m, err := w.stream.Recv()
	if err != nil {
		tb.Fatalf("first response: %v", err)
	}
	if m.GetBookmark() == nil {
		tb.Fatalf("first response is %v, want a bookmark", m)
	}
	return w, watchtest.Decode(tb, ts.st, m.GetBookmark().GetCursor())
}

// until collects the cursors of changes until the stream reaches last
// (through a change or a bookmark).
func (w *watcher) until(last store.Cursor) ([]store.Cursor, error) {
	var got []store.Cursor
	for {
		m, err := w.stream.Recv()
		if err != nil {
			return got, err
		}
		var pos store.Cursor
		if c := m.GetChange(); c != nil {
			pos = watchtest.Decode(w.tb, w.st, c.GetCursor())
			got = append(got, pos)
		} else {
			pos = watchtest.Decode(w.tb, w.st, m.GetBookmark().GetCursor())
		}
		if pos >= last {
			return got, nil
		}
	}
}

func mustHead(tb testing.TB, st store.Store) store.Cursor {
	tb.Helper()
	b, err := st.ChangeBounds(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return b.Head
}

// calendars and providers the tests spread their changes over.
var (
	calA = watchtest.CalendarID(model.ProviderPostpress, 1)
	calB = watchtest.CalendarID(model.ProviderPostpress, 2)
	calR = watchtest.CalendarID(model.ProviderRecall, 3)
)

func TestWatchOrderingUnderConcurrentWriters(t *testing.T) {
	testdb.OnBackends(t, testWatchOrderingUnderConcurrentWriters)
}

func testWatchOrderingUnderConcurrentWriters(t *testing.T, be testdb.Backend) {
	ts := mustStartServer(t, be.NewDatabase(t), watch.Config{TailSize: 64, MinBookmarkInterval: 20 * time.Millisecond})
	type sub struct {
		name string
		w    *watcher
		keep func(store.ChangeRecord) bool
	}
	fast := durationpb.New(50 * time.Millisecond)
	var subs []sub
	var start store.Cursor
	for i := range 60 {
		req := &calsyncv1.WatchEventsRequest{BookmarkInterval: fast}
		var keep func(store.ChangeRecord) bool
		switch i % 4 {
		case 1:
			req.CalendarIds = []string{calA}
			keep = func(r store.ChangeRecord) bool { return r.CalendarID == calA }
		case 2:
			req.Providers = []string{model.ProviderRecall}
			keep = func(r store.ChangeRecord) bool { return r.Provider == model.ProviderRecall }
		case 3:
			req.ChangeTypes = []calsyncv1.ChangeType{calsyncv1.ChangeType_CHANGE_TYPE_UPDATED}
			keep = func(r store.ChangeRecord) bool { return r.Type == calsyncv1.ChangeType_CHANGE_TYPE_UPDATED }
		}
		w, pos := ts.mustWatch(t, req)
		if i == 0 {
			start = pos
		} else if pos != start {
			t.Fatalf("streams started at %d and %d with no commit in between", start, pos)
		}
		subs = append(subs, sub{fmt.Sprintf("stream %d", i), w, keep})
	}

	// Four writers commit concurrently: creates, then updates, in
	// transactions of one to three changes.
	var wg sync.WaitGroup
	for wr, cal := range []string{calA, calB, calR, calA} {
		provider := model.ProviderPostpress
		if cal == calR {
			provider = model.ProviderRecall
		}
		wg.Go(func() {
			for i := range 40 {
				n := wr*1000 + i
				ev := watchtest.Event(provider, cal, n, "v1")
				next := proto.Clone(ev).(*calsyncv1.CalendarEvent)
				next.Title = "v2"
				changes := []*calsyncv1.Change{watchtest.Created(ev)}
				if i%2 == 0 {
					changes = append(changes, watchtest.Updated(ev, next))
				}
				if _, err := watchtest.TryCommit(context.Background(), ts.st, changes...); err != nil {
					t.Errorf("commit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	head := mustHead(t, ts.st)
	log := watchtest.Log(t, ts.st, start)
	if len(log) != 4*40+4*20 {
		t.Fatalf("the log holds %d changes, want %d", len(log), 4*40+4*20)
	}
	var check sync.WaitGroup
	for _, s := range subs {
		check.Go(func() {
			got, err := s.w.until(head)
			if err != nil {
				t.Errorf("%s: %v", s.name, err)
			}
			watchtest.CheckStream(t, s.name, log, s.keep, got)
		})
	}
	check.Wait()
}

func TestWatchResumeAcrossRestart(t *testing.T) { testdb.OnBackends(t, testWatchResumeAcrossRestart) }

func testWatchResumeAcrossRestart(t *testing.T, be testdb.Backend) {
	ts := mustStartServer(t, be.NewDatabase(t), testWatchConfig())
	w, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{})
	var cs []*calsyncv1.Change
	for i := range 10 {
		cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, i, "e")))
	}
	cursors := watchtest.Commit(t, ts.st, cs...)
	var resumeAt string
	for range 5 {
		m, err := w.stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		resumeAt = m.GetChange().GetCursor()
	}
	storeID := ts.st.ID()

	ts.stop()
	// UNAVAILABLE tells the client to resume elsewhere or later.
	for {
		if _, err := w.stream.Recv(); err != nil {
			if c := status.Code(err); c != codes.Unavailable && c != codes.Canceled {
				t.Errorf("stream ended with %v, want UNAVAILABLE", err)
			}
			break
		}
	}

	ts2 := mustStartServer(t, ts.path, testWatchConfig())
	if ts2.st.ID() != storeID {
		t.Fatalf("store id changed across restart: %q → %q", storeID, ts2.st.ID())
	}
	var more []*calsyncv1.Change
	for i := 10; i < 15; i++ {
		more = append(more, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, i, "e")))
	}
	last := watchtest.Commit(t, ts2.st, more...)
	w2, pos := ts2.mustWatch(t, &calsyncv1.WatchEventsRequest{AfterCursor: resumeAt})
	if pos != cursors[4] {
		t.Fatalf("resumed at %d, want %d", pos, cursors[4])
	}
	got, err := w2.until(last[len(last)-1])
	if err != nil {
		t.Fatal(err)
	}
	watchtest.CheckStream(t, "resumed", watchtest.Log(t, ts2.st, cursors[4]), nil, got)
}

func TestWatchSnapshotThenLive(t *testing.T) { testdb.OnBackends(t, testWatchSnapshotThenLive) }

func testWatchSnapshotThenLive(t *testing.T, be testdb.Backend) {
	ts := mustStartServer(t, be.NewDatabase(t), testWatchConfig())
	events := map[string]*calsyncv1.CalendarEvent{}
	var cs []*calsyncv1.Change
	for i := range 200 {
		ev := watchtest.Event(model.ProviderPostpress, calA, i, "v0")
		events[ev.GetId()] = ev
		cs = append(cs, watchtest.Created(ev))
	}
	watchtest.Commit(t, ts.st, cs...)

	// A writer updates and creates events while the snapshot is read.
	ctx, stopWriting := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil && i < 2000; i++ {
			prev := events[watchtest.Event(model.ProviderPostpress, calA, i%200, "").GetId()]
			next := proto.Clone(prev).(*calsyncv1.CalendarEvent)
			next.Title = fmt.Sprintf("v%d", i+1)
			events[next.GetId()] = next
			created := watchtest.Event(model.ProviderPostpress, calA, 1000+i, "new")
			if _, err := watchtest.TryCommit(ctx, ts.st, watchtest.Updated(prev, next), watchtest.Created(created)); err != nil && ctx.Err() == nil {
				t.Errorf("commit: %v", err)
			}
		}
	})
	time.Sleep(5 * time.Millisecond)

	w := ts.watch(t, &calsyncv1.WatchEventsRequest{InitialSnapshot: true})
	state := map[string]*calsyncv1.CalendarEvent{}
	var snapshotAt store.Cursor
	for snapshotAt == 0 {
		m, err := w.stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.GetChange() != nil:
			c := m.GetChange()
			if c.GetType() != calsyncv1.ChangeType_CHANGE_TYPE_CREATED || c.GetCursor() != "" {
				t.Fatalf("snapshot change %v, want CREATED without cursor", c)
			}
			state[c.GetEvent().GetId()] = c.GetEvent()
		case m.GetBookmark().GetSnapshotComplete():
			snapshotAt = watchtest.Decode(t, ts.st, m.GetBookmark().GetCursor())
		default:
			t.Fatalf("unexpected %v during the snapshot", m)
		}
	}
	stopWriting()
	wg.Wait()
	head := mustHead(t, ts.st)

	// Live changes continue right after the snapshot's position...
	var live []store.Cursor
	for len(live) == 0 || live[len(live)-1] < head {
		m, err := w.stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if c := m.GetChange(); c != nil {
			live = append(live, watchtest.Decode(t, ts.st, c.GetCursor()))
			state[c.GetEvent().GetId()] = c.GetEvent()
		} else if head == snapshotAt {
			break
		}
	}
	watchtest.CheckStream(t, "live", watchtest.Log(t, ts.st, snapshotAt), nil, live)

	// ...so the snapshot plus the live changes is the store's state.
	all, err := ts.st.ListEvents(context.Background(), store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(state) {
		t.Fatalf("snapshot+live holds %d events, the store %d", len(state), len(all))
	}
	for _, ev := range all {
		if got := state[ev.GetId()]; got.GetTitle() != ev.GetTitle() {
			t.Errorf("event %s: snapshot+live says %q, the store %q", ev.GetId(), got.GetTitle(), ev.GetTitle())
		}
	}
}

// errorInfo returns the ErrorInfo detail of a gRPC error.
func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

func TestWatchCursors(t *testing.T) { testdb.OnBackends(t, testWatchCursors) }

func testWatchCursors(t *testing.T, be testdb.Backend) {
	ts := mustStartServer(t, be.NewDatabase(t), testWatchConfig())
	first := watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 1, "e")))
	codec := watch.NewCursorCodec(ts.st.ID())
	recvErr := func(t *testing.T, req *calsyncv1.WatchEventsRequest) error {
		t.Helper()
		w := ts.watch(t, req)
		for {
			if _, err := w.stream.Recv(); err != nil {
				return err
			}
		}
	}
	tests := []struct {
		name   string
		req    *calsyncv1.WatchEventsRequest
		code   codes.Code
		reason string
	}{
		{"ErrMalformed", &calsyncv1.WatchEventsRequest{AfterCursor: "not-a-cursor"}, codes.InvalidArgument, watch.ReasonCursorMalformed},
		{"ErrForeign", &calsyncv1.WatchEventsRequest{AfterCursor: watch.NewCursorCodec("another-store").Encode(first[0])}, codes.InvalidArgument, watch.ReasonCursorForeign},
		{"ErrFuture", &calsyncv1.WatchEventsRequest{AfterCursor: codec.Encode(first[0] + 100)}, codes.Unavailable, watch.ReasonCursorAhead},
		{"ErrSnapshotWithCursor", &calsyncv1.WatchEventsRequest{AfterCursor: codec.Encode(first[0]), InitialSnapshot: true}, codes.InvalidArgument, watch.ReasonInvalidRequest},
		{"ErrBadFilter", &calsyncv1.WatchEventsRequest{Providers: []string{"google"}}, codes.InvalidArgument, watch.ReasonInvalidRequest},
		{"ErrBadCalendar", &calsyncv1.WatchEventsRequest{CalendarIds: []string{"cal_x"}}, codes.InvalidArgument, watch.ReasonInvalidRequest},
		{"ErrBadType", &calsyncv1.WatchEventsRequest{ChangeTypes: []calsyncv1.ChangeType{0}}, codes.InvalidArgument, watch.ReasonInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := recvErr(t, tt.req)
			if status.Code(err) != tt.code || errorInfo(err).GetReason() != tt.reason {
				t.Fatalf("got %v (reason %q), want %v %s", err, errorInfo(err).GetReason(), tt.code, tt.reason)
			}
		})
	}
	t.Run("FutureCursorReached", func(t *testing.T) {
		// A server of its own waits long for a cursor ahead, so a loaded
		// machine cannot turn the wait into UNAVAILABLE; whether the commit
		// lands before or after the server reads the request, the stream
		// must start at the next cursor.
		cfg := testWatchConfig()
		cfg.FutureCursorWait = time.Minute
		ts := mustStartServer(t, be.NewDatabase(t), cfg)
		first := watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 1, "e")))
		codec := watch.NewCursorCodec(ts.st.ID())
		w := ts.watch(t, &calsyncv1.WatchEventsRequest{AfterCursor: codec.Encode(first[0] + 1)})
		next := watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 2, "e")))
		if got, err := w.until(next[0]); err != nil || len(got) != 0 {
			t.Fatalf("stream from the next cursor got %v, %v; want a bookmark at it", got, err)
		}
	})
	t.Run("ErrCompacted", func(t *testing.T) {
		// Compaction keeps the newest change: two more make it remove the
		// one right after first[0], so that cursor can no longer resume.
		watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 2, "e")))
		watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 3, "e")))
		if _, err := ts.st.CompactChanges(context.Background(), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		err := recvErr(t, &calsyncv1.WatchEventsRequest{AfterCursor: codec.Encode(first[0])})
		info := errorInfo(err)
		if status.Code(err) != codes.OutOfRange || info.GetReason() != watch.ReasonCursorCompacted {
			t.Fatalf("got %v, want OUT_OF_RANGE %s", err, watch.ReasonCursorCompacted)
		}
		b, _ := ts.st.ChangeBounds(context.Background())
		if oldest := info.GetMetadata()["oldest_cursor"]; oldest != codec.Encode(b.Compacted) {
			t.Errorf("oldest_cursor = %q, want %q", oldest, codec.Encode(b.Compacted))
		}
	})
}

func TestWatchFilters(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	tests := []struct {
		name string
		req  *calsyncv1.WatchEventsRequest
		keep func(store.ChangeRecord) bool
	}{
		{"Calendars", &calsyncv1.WatchEventsRequest{CalendarIds: []string{calB, calR}},
			func(r store.ChangeRecord) bool { return r.CalendarID == calB || r.CalendarID == calR }},
		{"Providers", &calsyncv1.WatchEventsRequest{Providers: []string{model.ProviderPostpress}},
			func(r store.ChangeRecord) bool { return r.Provider == model.ProviderPostpress }},
		{"ChangeTypes", &calsyncv1.WatchEventsRequest{ChangeTypes: []calsyncv1.ChangeType{calsyncv1.ChangeType_CHANGE_TYPE_DELETED, calsyncv1.ChangeType_CHANGE_TYPE_CREATED}},
			func(r store.ChangeRecord) bool { return r.Type != calsyncv1.ChangeType_CHANGE_TYPE_UPDATED }},
		{"Combined", &calsyncv1.WatchEventsRequest{CalendarIds: []string{calA}, ChangeTypes: []calsyncv1.ChangeType{calsyncv1.ChangeType_CHANGE_TYPE_UPDATED}},
			func(r store.ChangeRecord) bool {
				return r.CalendarID == calA && r.Type == calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
			}},
	}
	streams := make([]*watcher, len(tests))
	var start store.Cursor
	for i, tt := range tests {
		tt.req.BookmarkInterval = durationpb.New(30 * time.Millisecond)
		streams[i], start = ts.mustWatch(t, tt.req)
	}
	for i, cal := range []string{calA, calB, calR} {
		provider := model.ProviderPostpress
		if cal == calR {
			provider = model.ProviderRecall
		}
		for n := range 3 {
			ev := watchtest.Event(provider, cal, i*10+n, "v1")
			next := proto.Clone(ev).(*calsyncv1.CalendarEvent)
			next.Title = "v2"
			watchtest.Commit(t, ts.st, watchtest.Created(ev), watchtest.Updated(ev, next), watchtest.Deleted(next))
		}
	}
	head := mustHead(t, ts.st)
	log := watchtest.Log(t, ts.st, start)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := streams[i].until(head)
			if err != nil {
				t.Fatal(err)
			}
			watchtest.CheckStream(t, tt.name, log, tt.keep, got)
		})
	}
}

func TestWatchIncludePrevious(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	with, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{IncludePrevious: true})
	without, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{})
	ev := watchtest.Event(model.ProviderPostpress, calA, 1, "v1")
	next := proto.Clone(ev).(*calsyncv1.CalendarEvent)
	next.Title = "v2"
	watchtest.Commit(t, ts.st, watchtest.Updated(ev, next))
	a, err := with.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	b, err := without.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if a.GetChange().GetPreviousEvent().GetTitle() != "v1" || len(a.GetChange().GetChangedFields()) == 0 {
		t.Errorf("include_previous: got %v, want the previous event and changed fields", a.GetChange())
	}
	if b.GetChange().GetPreviousEvent() != nil || b.GetChange().GetEvent().GetTitle() != "v2" || b.GetChange().GetCommitTime() == nil {
		t.Errorf("without include_previous: got %v, want no previous event", b.GetChange())
	}
}

func TestWatchBookmarks(t *testing.T) {
	ts := mustStartServer(t, "", watch.Config{MinBookmarkInterval: 100 * time.Millisecond})
	t.Run("Idle", func(t *testing.T) {
		w, start := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{BookmarkInterval: durationpb.New(time.Millisecond)})
		began := time.Now()
		for range 2 {
			m, err := w.stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := watchtest.Decode(t, ts.st, m.GetBookmark().GetCursor()); got != start {
				t.Fatalf("idle bookmark at %d, want %d", got, start)
			}
		}
		if d := time.Since(began); d < 180*time.Millisecond {
			t.Errorf("two bookmarks in %v: the 100ms minimum was not enforced", d)
		}
	})
	t.Run("Filtered", func(t *testing.T) {
		w, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{CalendarIds: []string{calB}, BookmarkInterval: durationpb.New(100 * time.Millisecond)})
		skipped := watchtest.Commit(t, ts.st, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, 1, "e")))
		m, err := w.stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetBookmark() == nil || watchtest.Decode(t, ts.st, m.GetBookmark().GetCursor()) != skipped[0] {
			t.Fatalf("got %v, want a bookmark past the skipped change %d", m, skipped[0])
		}
	})
}

func TestWatchStalledReader(t *testing.T) { testdb.OnBackends(t, testWatchStalledReader) }

func testWatchStalledReader(t *testing.T, be testdb.Backend) {
	// A small tail sends the stalled stream to the change log.
	ts := mustStartServer(t, be.NewDatabase(t), watch.Config{TailSize: 32, BatchSize: 16, MinBookmarkInterval: 20 * time.Millisecond})
	stalled, start := ts.mustWatchWith(t, ts.smallWindowClient(t), &calsyncv1.WatchEventsRequest{IncludePrevious: true})
	var others []*watcher
	for range 20 {
		w, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{})
		others = append(others, w)
	}
	// Big events fill the stalled stream's flow-control windows quickly.
	big := make([]byte, 4<<10)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	results := make([][]store.Cursor, len(others))
	wg.Go(func() {
		for i := range 600 {
			ev := watchtest.Event(model.ProviderPostpress, calA, i, "e")
			ev.Description = string(big)
			if _, err := watchtest.TryCommit(context.Background(), ts.st, watchtest.Created(ev)); err != nil {
				t.Errorf("commit: %v", err)
				return
			}
		}
	})
	wg.Wait()
	head := mustHead(t, ts.st)
	log := watchtest.Log(t, ts.st, start)
	for i, w := range others {
		wg.Go(func() {
			var err error
			if results[i], err = w.until(head); err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range others {
		watchtest.CheckStream(t, fmt.Sprintf("stream %d", i), log, nil, results[i])
	}
	// The stalled stream reads at last and catches up without a gap.
	got, err := stalled.until(head)
	if err != nil {
		t.Fatal(err)
	}
	watchtest.CheckStream(t, "stalled", log, nil, got)
}

func TestWatchStalledReaderBehindRetention(t *testing.T) {
	testdb.OnBackends(t, testWatchStalledReaderBehindRetention)
}

func testWatchStalledReaderBehindRetention(t *testing.T, be testdb.Backend) {
	ts := mustStartServer(t, be.NewDatabase(t), watch.Config{TailSize: 8, BatchSize: 4, MinBookmarkInterval: 20 * time.Millisecond})
	stalled, _ := ts.mustWatchWith(t, ts.smallWindowClient(t), &calsyncv1.WatchEventsRequest{})
	big := string(make([]byte, 8<<10))
	for i := range 300 {
		ev := watchtest.Event(model.ProviderPostpress, calA, i, "e")
		ev.Description = big
		watchtest.Commit(t, ts.st, watchtest.Created(ev))
	}
	// Retention passes for everything the stalled stream has not read.
	if _, err := ts.st.CompactChanges(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := stalled.stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || errorInfo(err).GetReason() != watch.ReasonSubscriberBehind {
			t.Fatalf("stalled stream ended with %v, want RESOURCE_EXHAUSTED %s", err, watch.ReasonSubscriberBehind)
		}
		return
	}
}

func TestWatchEndsOnShutdown(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	w, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{})
	done := make(chan struct{})
	go func() {
		ts.stop()
		close(done)
	}()
	_, err := w.stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown waited for the watch stream")
	}
}

// cursor returns the opaque cursor of pos in ts's store.
func (ts *testServer) cursor(pos store.Cursor) string {
	return watch.NewCursorCodec(ts.st.ID()).Encode(pos)
}

// timeFarAhead is a compaction bound that removes every change but the
// newest.
func timeFarAhead() time.Time { return time.Now().Add(time.Hour) }
