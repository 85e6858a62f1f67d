package watch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// MustOpenStore opens a SQLite store on a temporary file.
func MustOpenStore(tb testing.TB) store.Store {
	tb.Helper()
	return testdb.MustOpen(tb)
}

// MustHub returns a hub over st.
func MustHub(tb testing.TB, st store.Store, cfg watch.Config) *watch.Hub {
	tb.Helper()
	h, err := watch.New(context.Background(), st, cfg)
	if err != nil {
		tb.Fatalf("watch.New: %v", err)
	}
	return h
}

// recorder is a stream's client side: it decodes what the hub sends and
// hands it over on a channel.
type recorder struct {
	msgs chan *calsyncv1.WatchEventsResponse
	done chan error
}

// startWatch runs Watch in a goroutine. gate, when not nil, is received from
// before every send, to stall the stream.
func startWatch(ctx context.Context, h *watch.Hub, req *calsyncv1.WatchEventsRequest, gate chan struct{}) *recorder {
	r := &recorder{msgs: make(chan *calsyncv1.WatchEventsResponse, 100000), done: make(chan error, 1)}
	go func() {
		r.done <- h.Watch(ctx, req, func(f watch.Frame) error {
			if gate != nil {
				<-gate
			}
			var resp calsyncv1.WatchEventsResponse
			if err := proto.Unmarshal(f, &resp); err != nil {
				return err
			}
			r.msgs <- &resp
			return nil
		})
	}()
	return r
}

// next returns the next response, failing after a few seconds.
func (r *recorder) next(tb testing.TB) *calsyncv1.WatchEventsResponse {
	tb.Helper()
	select {
	case m := <-r.msgs:
		return m
	case err := <-r.done:
		tb.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("no response within 10s")
	}
	return nil
}

// changesUntil collects change cursors until one reaches last.
func (r *recorder) changesUntil(tb testing.TB, st store.Store, last store.Cursor) []store.Cursor {
	tb.Helper()
	var got []store.Cursor
	for {
		m := r.next(tb)
		var pos store.Cursor
		if c := m.GetChange(); c != nil {
			pos = watchtest.Decode(tb, st, c.GetCursor())
			got = append(got, pos)
		} else {
			pos = watchtest.Decode(tb, st, m.GetBookmark().GetCursor())
		}
		if pos >= last {
			return got
		}
	}
}

func commitEvents(tb testing.TB, st store.Store, calendar string, from, n int) []store.Cursor {
	tb.Helper()
	var cs []*calsyncv1.Change
	for i := from; i < from+n; i++ {
		cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, calendar, i, "e")))
	}
	return watchtest.Commit(tb, st, cs...)
}

func TestStalledStreamCatchesUpFromLog(t *testing.T) {
	st := MustOpenStore(t)
	// A tail of 8 changes: the stalled stream falls out of memory at once.
	h := MustHub(t, st, watch.Config{TailSize: 8, BatchSize: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)

	gate := make(chan struct{})
	stalled := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, gate)
	gate <- struct{}{} // let the starting bookmark through
	stalled.next(t)
	fast := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, nil)
	start := watchtest.Decode(t, st, fast.next(t).GetBookmark().GetCursor())

	var last store.Cursor
	for i := range 50 {
		cs := commitEvents(t, st, cal, i*2, 2)
		last = cs[len(cs)-1]
	}
	log := watchtest.Log(t, st, start)
	watchtest.CheckStream(t, "fast", log, nil, fast.changesUntil(t, st, last))

	close(gate) // the stalled reader reads again
	watchtest.CheckStream(t, "stalled", log, nil, stalled.changesUntil(t, st, last))
}

func TestStreamBehindRetention(t *testing.T) {
	st := MustOpenStore(t)
	h := MustHub(t, st, watch.Config{TailSize: 4, BatchSize: 2, Retention: time.Nanosecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)

	gate := make(chan struct{})
	stalled := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, gate)
	gate <- struct{}{}
	stalled.next(t)
	commitEvents(t, st, cal, 0, 1)
	gate <- struct{}{} // it takes the first change, then stalls
	stalled.next(t)
	// More than the stream can hold before it stalls again: a page of the
	// log and the pages it reads ahead (3 × 4×BatchSize changes), so that
	// it has to read again after the compaction.
	commitEvents(t, st, cal, 1, 100)
	if _, err := h.Compact(ctx); err != nil {
		t.Fatalf("compact: %v", err)
	}
	close(gate)
	var err error
	for err == nil {
		select {
		case <-stalled.msgs:
		case err = <-stalled.done:
		case <-time.After(10 * time.Second):
			t.Fatal("stream never ended")
		}
	}
	if status.Code(err) != codes.ResourceExhausted || watch.Reason(err) != watch.ReasonSubscriberBehind {
		t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED %s", err, watch.ReasonSubscriberBehind)
	}
}

func TestCompactionEnforcesRetention(t *testing.T) {
	st := MustOpenStore(t)
	h := MustHub(t, st, watch.Config{Retention: time.Nanosecond, CompactInterval: 10 * time.Millisecond})
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	first := commitEvents(t, st, cal, 0, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.RunCompaction(ctx) })
	defer func() { cancel(); wg.Wait() }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := st.ChangeBounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b.Compacted >= first[1] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("change log not compacted: bounds %+v", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := h.Watch(ctx, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(first[0] - 1)}, func(watch.Frame) error { return nil })
	if status.Code(err) != codes.OutOfRange || watch.Reason(err) != watch.ReasonCursorCompacted {
		t.Fatalf("Watch from a compacted cursor = %v, want OUT_OF_RANGE %s", err, watch.ReasonCursorCompacted)
	}
	if !errors.As(err, new(*watch.Error)) {
		t.Fatalf("error %T is not a *watch.Error", err)
	}
}

// TestFilteredStreamsUnderConcurrentCommits checks that streams filtered to
// calendars, woken only by commits for them, miss no change while commits
// for every calendar race with their reads. Bookmarks are hours apart, so a
// lost wake-up is not rescued by the next bookmark: the stream stalls and
// the round times out.
func TestFilteredStreamsUnderConcurrentCommits(t *testing.T) {
	st := MustOpenStore(t)
	h := MustHub(t, st, watch.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const calendars, writers, rounds, perRound = 6, 3, 40, 8
	cals := make([]string, calendars)
	for i := range cals {
		cals[i] = watchtest.CalendarID(model.ProviderPostpress, i)
	}

	type watcher struct {
		name string
		keep func(store.ChangeRecord) bool
		rec  *recorder
		got  []store.Cursor
	}
	inSet := func(ids ...string) func(store.ChangeRecord) bool {
		return func(r store.ChangeRecord) bool {
			for _, id := range ids {
				if r.CalendarID == id {
					return true
				}
			}
			return false
		}
	}
	var watchers []*watcher
	add := func(name string, keep func(store.ChangeRecord) bool, req *calsyncv1.WatchEventsRequest) {
		req.BookmarkInterval = durationpb.New(time.Hour)
		watchers = append(watchers, &watcher{name: name, keep: keep, rec: startWatch(ctx, h, req, nil)})
	}
	for i, id := range cals {
		for j := range 2 {
			add(fmt.Sprintf("calendar %d #%d", i, j), inSet(id), &calsyncv1.WatchEventsRequest{CalendarIds: []string{id}})
		}
	}
	add("two calendars", inSet(cals[0], cals[3]), &calsyncv1.WatchEventsRequest{CalendarIds: []string{cals[0], cals[3]}})
	add("unfiltered", nil, &calsyncv1.WatchEventsRequest{})
	add("provider", nil, &calsyncv1.WatchEventsRequest{Providers: []string{model.ProviderPostpress}})
	var start store.Cursor
	for _, w := range watchers {
		start = watchtest.Decode(t, st, w.rec.next(t).GetBookmark().GetCursor())
	}

	n := 0
	for round := range rounds {
		// Each writer commits to every calendar in turn, some
		// transactions spanning two calendars.
		var wg sync.WaitGroup
		for wr := range writers {
			first := n + wr*perRound
			wg.Go(func() {
				for k := range perRound {
					i := first + k
					cs := []*calsyncv1.Change{watchtest.Created(watchtest.Event(model.ProviderPostpress, cals[i%calendars], i, "e"))}
					if i%3 == 0 {
						cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, cals[(i+1)%calendars], i, "e")))
					}
					if _, err := watchtest.TryCommit(ctx, st, cs...); err != nil {
						t.Errorf("commit: %v", err)
					}
				}
			})
		}
		wg.Wait()
		n += writers * perRound
		log := watchtest.Log(t, st, start)
		for _, w := range watchers {
			var last store.Cursor
			for _, r := range log {
				if w.keep == nil || w.keep(r) {
					last = r.Cursor
				}
			}
			if len(w.got) > 0 && w.got[len(w.got)-1] >= last {
				continue
			}
			w.got = append(w.got, w.rec.changesUntil(t, st, last)...)
			watchtest.CheckStream(t, fmt.Sprintf("round %d, %s", round, w.name), log, w.keep, w.got)
		}
		if t.Failed() {
			return
		}
	}
}

// TestFilteredStreamKeepsUpWithOtherCalendars checks that a stream filtered
// to a calendar nobody writes to still moves with the change log: its
// bookmarks carry the newest cursor and it never falls out of the
// in-memory tail, although no commit wakes it.
func TestFilteredStreamKeepsUpWithOtherCalendars(t *testing.T) {
	st := MustOpenStore(t)
	var fallbacks atomic.Int64
	h := MustHub(t, st, watch.Config{TailSize: 8, MinBookmarkInterval: time.Millisecond, OnFallback: func() { fallbacks.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := watchtest.CalendarID(model.ProviderPostpress, 1)
	busy := watchtest.CalendarID(model.ProviderPostpress, 2)

	r := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{
		CalendarIds: []string{quiet}, BookmarkInterval: durationpb.New(20 * time.Millisecond),
	}, nil)
	r.next(t) // the starting bookmark
	// Twice: the second time, the stream has just received a change.
	for round := range 2 {
		var last store.Cursor
		for i := range 100 { // far more than the tail holds
			last = commitEvents(t, st, busy, round*100+i, 1)[0]
		}
		for {
			m := r.next(t)
			if m.GetChange() != nil {
				t.Fatalf("received a change of another calendar: %v", m.GetChange())
			}
			if watchtest.Decode(t, st, m.GetBookmark().GetCursor()) >= last {
				break
			}
		}
		want := commitEvents(t, st, quiet, round, 1)
		if got := r.changesUntil(t, st, want[0]); len(got) != 1 || got[0] != want[0] {
			t.Fatalf("round %d: received changes %v, want %v", round, got, want)
		}
	}
	if n := fallbacks.Load(); n != 0 {
		t.Fatalf("the stream read the change log %d times; it should have stayed in the tail", n)
	}
}

// TestFilteredStreamGetsChangesCommittedWhileSending checks that a stream
// busy sending when a change for it is committed, followed by changes for
// another calendar, still receives that change: it must not skip to the
// newest cursor.
func TestFilteredStreamGetsChangesCommittedWhileSending(t *testing.T) {
	st := MustOpenStore(t)
	h := MustHub(t, st, watch.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mine := watchtest.CalendarID(model.ProviderPostpress, 1)
	other := watchtest.CalendarID(model.ProviderPostpress, 2)

	// The stream hands each frame over and waits, inside send, until it
	// is released.
	entered, release := make(chan watch.Frame), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.Watch(ctx, &calsyncv1.WatchEventsRequest{CalendarIds: []string{mine}}, func(f watch.Frame) error {
			select {
			case entered <- f:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	nextCursor := func() store.Cursor {
		t.Helper()
		select {
		case f := <-entered:
			var resp calsyncv1.WatchEventsResponse
			if err := proto.Unmarshal(f, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.GetChange() == nil {
				t.Fatalf("got %v, want a change", &resp)
			}
			return watchtest.Decode(t, st, resp.GetChange().GetCursor())
		case err := <-done:
			t.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no change within 10s")
		}
		return 0
	}
	<-entered // the starting bookmark
	release <- struct{}{}

	first := commitEvents(t, st, mine, 0, 1)[0]
	if got := nextCursor(); got != first {
		t.Fatalf("first change has cursor %d, want %d", got, first)
	}
	// The stream has read up to the head and sits in send.
	second := commitEvents(t, st, mine, 1, 1)[0]
	for i := range 5 {
		commitEvents(t, st, other, i, 1)
	}
	release <- struct{}{}
	if got := nextCursor(); got != second {
		t.Fatalf("second change has cursor %d, want %d", got, second)
	}
}

// TestTailBoundedInBytes: large changes fill the byte bound long before the
// tail's count; the tail never holds more than the bound, and streams that
// fall out of it (a live one, a stalled one, a resume from before them all)
// still get every change, in order, from the change log.
func TestTailBoundedInBytes(t *testing.T) {
	st := MustOpenStore(t)
	const bound = 256 << 10
	h := MustHub(t, st, watch.Config{TailSize: 4096, TailBytes: bound, BatchSize: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)

	live := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, nil)
	start := watchtest.Decode(t, st, live.next(t).GetBookmark().GetCursor())
	gate := make(chan struct{})
	stalled := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, gate)
	gate <- struct{}{} // let the starting bookmark through
	stalled.next(t)

	big := strings.Repeat("x", 60<<10)
	var last store.Cursor
	for i := range 40 {
		ev := watchtest.Event(model.ProviderPostpress, cal, i, "large")
		ev.Description = big
		last = watchtest.Commit(t, st, watchtest.Created(ev))[0]
		if n := h.MemoryBytes(); n > bound || n <= 0 {
			t.Fatalf("after change %d the tail holds %d bytes; the bound is %d", i, n, bound)
		}
	}
	log := watchtest.Log(t, st, start)
	if len(log) != 40 {
		t.Fatalf("change log holds %d changes, want 40", len(log))
	}
	watchtest.CheckStream(t, "live", log, nil, live.changesUntil(t, st, last))
	close(gate)
	watchtest.CheckStream(t, "stalled", log, nil, stalled.changesUntil(t, st, last))
	resumed := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(start)}, nil)
	resumed.next(t) // the starting bookmark
	watchtest.CheckStream(t, "resumed", log, nil, resumed.changesUntil(t, st, last))
}

// TestFromNowStartsAtTheLogHead starts a stream "from now" after a change
// committed but before the hub heard of it (as on a replica whose feed
// trails a shared database): the stream starts after that change and never
// receives it.
func TestFromNowStartsAtTheLogHead(t *testing.T) {
	st := MustOpenStore(t)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var holding atomic.Bool
	// Registered before the hub's hook, so the hub hears of a commit only
	// once this hook returns.
	st.OnCommit(func([]store.ChangeRecord) {
		if holding.Load() {
			entered <- struct{}{}
			<-release
		}
	})
	h := MustHub(t, st, watch.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	holding.Store(true)
	committed := make(chan []store.Cursor, 1)
	go func() { committed <- commitEvents(t, st, "c1", 0, 1) }()
	<-entered
	holding.Store(false)

	r := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{}, nil)
	first := r.next(t)
	close(release)
	early := (<-committed)[0]
	if got := watchtest.Decode(t, st, first.GetBookmark().GetCursor()); got != early {
		t.Fatalf("a stream from now started at cursor %d, want the log's head %d", got, early)
	}
	late := commitEvents(t, st, "c1", 1, 1)[0]
	if got := r.changesUntil(t, st, late); len(got) != 1 || got[0] != late {
		t.Fatalf("stream from now got changes %v, want only %d", got, late)
	}
}

// gappyLog is a change log with holes: every cursor divisible by 5 is
// missing, as if those changes had never been written. Its pages stay full.
type gappyLog struct{ store.Store }

func (g gappyLog) ReadChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int) ([]store.ChangeRecord, error) {
	var out []store.ChangeRecord
	size := 0
	for len(out) < limit && size < maxBytes {
		recs, err := g.Store.ReadChanges(ctx, after, limit)
		if err != nil || len(recs) == 0 {
			return out, err
		}
		for _, r := range recs {
			if r.Cursor%5 != 0 && len(out) < limit && size < maxBytes {
				out = append(out, r)
				size += len(r.Change)
			}
		}
		after = recs[len(recs)-1].Cursor
	}
	return out, nil
}

func (g gappyLog) VisitChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int, visit func(*store.ChangeRecord) error) error {
	recs, err := g.ReadChangePage(ctx, after, limit, maxBytes)
	if err != nil {
		return err
	}
	return store.VisitRecords(recs, visit)
}

func (g gappyLog) ReadChanges(ctx context.Context, after store.Cursor, limit int) ([]store.ChangeRecord, error) {
	return g.ReadChangePage(ctx, after, limit, 1<<30)
}

// A stream catching up reads pages ahead at guessed positions; where the
// log has a hole, or a page is cut short by its bytes, the guess is wrong,
// and the stream must still receive every change once, in order.
func TestCatchUpAcrossHolesInTheLog(t *testing.T) {
	st := MustOpenStore(t)
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	for i := range 40 {
		commitEvents(t, st, cal, i*3, 3)
	}
	g := gappyLog{st}
	want := watchtest.Log(t, g, 0)
	last := want[len(want)-1].Cursor
	for _, tt := range []struct {
		name      string
		pageBytes int
	}{
		{"PagesByCount", 0},
		{"PagesOfOneChange", 1},
		{"PagesOfAFewChanges", 3 * len(want[0].Change)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := MustHub(t, g, watch.Config{TailSize: 1, BatchSize: 2, LogPageBytes: tt.pageBytes})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(0)}, nil)
			watchtest.CheckStream(t, "catch-up", want, nil, r.changesUntil(t, st, last))
		})
	}
}
