package watch_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// jsonRecorder is a JSON stream's client side. Its channel carries what
// was sent since the last flush, at each flush.
type jsonRecorder struct {
	pending []watch.Message
	flushes chan []watch.Message
	done    chan error
}

func (r *jsonRecorder) Send(m watch.Message) error {
	r.pending = append(r.pending, m)
	return nil
}

func (r *jsonRecorder) Flush() error {
	if len(r.pending) > 0 {
		r.flushes <- r.pending
		r.pending = nil
	}
	return nil
}

func startJSON(ctx context.Context, h *watch.Hub, req *calsyncv1.WatchEventsRequest) *jsonRecorder {
	r := &jsonRecorder{flushes: make(chan []watch.Message, 1000), done: make(chan error, 1)}
	go func() { r.done <- h.WatchJSON(ctx, req, r) }()
	return r
}

// messages collects flushed messages until it holds n changes.
func (r *jsonRecorder) changes(tb testing.TB, n int) (changes []watch.Message, flushes int) {
	tb.Helper()
	for len(changes) < n {
		select {
		case ms := <-r.flushes:
			flushes++
			for _, m := range ms {
				if !m.Bookmark {
					changes = append(changes, m)
				}
			}
		case err := <-r.done:
			tb.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			tb.Fatalf("%d of %d changes within 10s", len(changes), n)
		}
	}
	return changes, flushes
}

// TestJSONStreamsShareOneEncoding checks that JSON streams get each live
// change as the JSON of the Change a gRPC stream decodes, with previous
// state only when asked for, encoded once for all of them, and flushed once
// per batch rather than once per change.
func TestJSONStreamsShareOneEncoding(t *testing.T) {
	st := MustOpenStore(t)
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	h := MustHub(t, st, watch.Config{JSON: opts})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	before := watchtest.Event(model.ProviderPostpress, cal, 1, "before")
	watchtest.Commit(t, st, watchtest.Created(before))

	grpcFull := startWatch(ctx, h, &calsyncv1.WatchEventsRequest{IncludePrevious: true}, nil)
	grpcFull.next(t) // the starting bookmark
	lean := []*jsonRecorder{startJSON(ctx, h, &calsyncv1.WatchEventsRequest{}), startJSON(ctx, h, &calsyncv1.WatchEventsRequest{})}
	full := startJSON(ctx, h, &calsyncv1.WatchEventsRequest{IncludePrevious: true})
	for _, r := range append(lean, full) {
		if ms := <-r.flushes; len(ms) != 1 || !ms[0].Bookmark || ms[0].Cursor == "" {
			t.Fatalf("stream began with %+v, want one bookmark with its cursor", ms)
		}
	}

	const n = 20
	var changes []*calsyncv1.Change
	for i := range n {
		next := proto.Clone(before).(*calsyncv1.CalendarEvent)
		next.Title = "after " + string(rune('a'+i))
		changes = append(changes, watchtest.Updated(before, next))
	}
	last := watchtest.Commit(t, st, changes...)[n-1]
	grpcGot := grpcFull.changesUntil(t, st, last)
	if len(grpcGot) != n {
		t.Fatalf("gRPC stream got %d changes, want %d", len(grpcGot), n)
	}

	got0, flushes := lean[0].changes(t, n)
	got1, _ := lean[1].changes(t, n)
	gotFull, _ := full.changes(t, n)
	if flushes >= n {
		t.Errorf("%d flushes for %d changes committed together; want one per batch", flushes, n)
	}
	for i := range n {
		if &got0[i].JSON[0] != &got1[i].JSON[0] {
			t.Fatalf("change %d was encoded once per stream, not once for all", i)
		}
		var c, cFull calsyncv1.Change
		if err := protojson.Unmarshal(got0[i].JSON, &c); err != nil {
			t.Fatalf("change %d: %s: %v", i, got0[i].JSON, err)
		}
		if err := protojson.Unmarshal(gotFull[i].JSON, &cFull); err != nil {
			t.Fatal(err)
		}
		if c.GetCursor() != got0[i].Cursor || watchtest.Decode(t, st, c.GetCursor()) != grpcGot[i] {
			t.Errorf("change %d has cursor %q (message %q), want %v", i, c.GetCursor(), got0[i].Cursor, grpcGot[i])
		}
		if c.GetPreviousEvent() != nil || cFull.GetPreviousEvent() == nil {
			t.Errorf("change %d: previous_event sent without include_previous (%v) or missing with it (%v)", i, c.GetPreviousEvent() != nil, cFull.GetPreviousEvent() == nil)
		}
		want := proto.Clone(&cFull).(*calsyncv1.Change)
		want.PreviousEvent = nil
		if diff := cmp.Diff(want, &c, protocmp.Transform()); diff != "" {
			t.Errorf("change %d: lean and full JSON differ beyond previous state (-full +lean):\n%s", i, diff)
		}
	}
}

// TestJSONEncodingsCountTowardTailBytes checks that the JSON shared by REST
// streams counts toward TailBytes and is held within it, and that a JSON
// stream still gets every change, in order, when the bound sends it to the
// change log.
func TestJSONEncodingsCountTowardTailBytes(t *testing.T) {
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	t.Run("Counted", func(t *testing.T) {
		st := MustOpenStore(t)
		h := MustHub(t, st, watch.Config{JSON: opts})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		before := h.MemoryBytes()
		cursors := commitEvents(t, st, cal, 0, 20)
		framesOnly := h.MemoryBytes() - before
		r := startJSON(ctx, h, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(cursors[0] - 1)})
		got, _ := r.changes(t, len(cursors))
		var jsonBytes int64
		for _, m := range got {
			jsonBytes += int64(len(m.JSON) + len(m.Cursor))
		}
		if grown := h.MemoryBytes() - before - framesOnly; grown != jsonBytes {
			t.Fatalf("the tail grew by %d bytes when the changes' JSON (%d bytes) was encoded", grown, jsonBytes)
		}
	})
	t.Run("Bounded", func(t *testing.T) {
		st := MustOpenStore(t)
		const tailBytes = 16 << 10
		h := MustHub(t, st, watch.Config{TailBytes: tailBytes, JSON: opts})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := startJSON(ctx, h, &calsyncv1.WatchEventsRequest{})
		first := <-r.flushes
		start := watchtest.Decode(t, st, first[0].Cursor)
		var cursors []store.Cursor
		for i := range 10 {
			cursors = append(cursors, commitEvents(t, st, cal, i*20, 20)...)
		}
		got, _ := r.changes(t, len(cursors))
		var gotCursors []store.Cursor
		for _, m := range got {
			gotCursors = append(gotCursors, watchtest.Decode(t, st, m.Cursor))
		}
		watchtest.CheckStream(t, "json", watchtest.Log(t, st, start), nil, gotCursors)
		if mem := h.MemoryBytes(); mem > tailBytes || mem <= 0 {
			t.Fatalf("the tail holds %d bytes, want within (0, %d]", mem, tailBytes)
		}
	})
}
