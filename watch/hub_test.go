package watch_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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
	commitEvents(t, st, cal, 1, 20)
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
