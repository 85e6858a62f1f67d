package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
)

// roundTrips records, per connection, the round trips of each write
// transaction (from a plain BEGIN to its COMMIT or ROLLBACK): a statement
// or a batch is one.
type roundTrips struct {
	mu   sync.Mutex
	open map[*pgx.Conn][]string
	done [][]string
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.add(c, d.SQL)
	return ctx
}

func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var sqls []string
	for _, q := range d.Batch.QueuedQueries {
		sqls = append(sqls, q.SQL)
	}
	r.addBatch(c, sqls)
	return ctx
}

func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (r *roundTrips) add(c *pgx.Conn, sql string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[*pgx.Conn][]string{}
	}
	switch s := strings.ToLower(strings.TrimSpace(sql)); {
	case s == "begin":
		r.open[c] = []string{sql}
	case s == "commit" || s == "rollback":
		if tx, ok := r.open[c]; ok {
			r.done = append(r.done, append(tx, sql))
			delete(r.open, c)
		}
	default:
		if tx, ok := r.open[c]; ok {
			r.open[c] = append(tx, sql)
		}
	}
}

// addBatch records a batch as one round trip, which may begin a
// transaction or commit it.
func (r *roundTrips) addBatch(c *pgx.Conn, sqls []string) {
	if len(sqls) == 0 {
		return
	}
	text := "batch: " + strings.Join(sqls, "; ")
	if strings.EqualFold(sqls[0], "begin") {
		r.add(c, "begin")
		r.mu.Lock()
		r.open[c][0] = text
		r.mu.Unlock()
		if len(sqls) == 1 {
			return
		}
	} else {
		r.add(c, text)
	}
	if strings.EqualFold(sqls[len(sqls)-1], "commit") {
		r.mu.Lock()
		defer r.mu.Unlock()
		if tx, ok := r.open[c]; ok {
			r.done = append(r.done, tx)
			delete(r.open, c)
		}
	}
}

// writing returns the finished transactions that wrote events.
func (r *roundTrips) writing() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, tx := range r.done {
		if strings.Contains(strings.Join(tx, "\n"), "INSERT INTO events") {
			out = append(out, tx)
		}
	}
	return out
}

func (r *roundTrips) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = nil
}

// TestWritesShareRoundTrips: a write transaction's round trips do not grow
// with its writes. An Update that stores many events, appends their
// changes and finishes a delivery, and an EnqueueApply whose apply does as
// much, send their writes together; the reads inside see the writes not
// yet sent, and what commits is what was written.
func TestWritesShareRoundTrips(t *testing.T) {
	ctx := context.Background()
	trace := &roundTrips{}
	db, err := Open(ctx, pgtest.NewDatabase(t), Options{tracer: trace})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now().Add(time.Hour).Truncate(time.Hour)
	raw, err := structpb.NewStruct(map[string]any{"raw": true})
	if err != nil {
		t.Fatal(err)
	}
	event := func(id string, title string) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{Id: id, CalendarId: "cal_a", Provider: "postpress", Title: title,
			StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Hour)), Raw: raw}
	}
	const n = 20
	// writeMany stores n events (each twice: the reads must see the first
	// write), a calendar and a sync state, and appends n changes.
	writeMany := func(ctx context.Context, tx store.Tx, prefix string) error {
		cal := &calsyncv1.Calendar{Id: "cal_a", Provider: "postpress", ProviderCalendarId: prefix}
		if err := tx.PutCalendar(ctx, cal); err != nil {
			return err
		}
		got, err := tx.GetCalendar(ctx, "cal_a")
		if err != nil || !proto.Equal(got, cal) {
			return fmt.Errorf("GetCalendar after PutCalendar = %v, %v; want %v", got, err, cal)
		}
		for i := range n {
			id := fmt.Sprintf("%s_%d", prefix, i)
			if err := tx.PutEvent(ctx, event(id, "first")); err != nil {
				return err
			}
			prev, err := tx.GetEvent(ctx, id, false)
			if err != nil || prev.GetTitle() != "first" || prev.GetRaw() != nil {
				return fmt.Errorf("GetEvent(%s) after PutEvent = %v, %v; want title first, no raw", id, prev, err)
			}
			next := event(id, "second")
			if err := tx.PutEvent(ctx, next); err != nil {
				return err
			}
			if got, err := tx.GetEvent(ctx, id, true); err != nil || !proto.Equal(got, next) {
				return fmt.Errorf("GetEvent(%s, raw) = %v, %v; want %v", id, got, err, next)
			}
			if _, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: next}); err != nil {
				return err
			}
		}
		wm := start.Add(123 * time.Nanosecond)
		if err := tx.PutSyncState(ctx, store.SyncState{CalendarID: "cal_a", Watermark: wm}); err != nil {
			return err
		}
		if s, err := tx.GetSyncState(ctx, "cal_a"); err != nil || !s.Watermark.Equal(wm) || !s.LastFullSync.IsZero() {
			return fmt.Errorf("GetSyncState after PutSyncState = %+v, %v", s, err)
		}
		return nil
	}

	id, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	trace.reset()
	if err := db.Update(ctx, func(tx store.Tx) error {
		if err := writeMany(ctx, tx, "u"); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, id, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
	}); err != nil {
		t.Fatal(err)
	}
	// BEGIN; the append lock with the head; the writes; COMMIT (apart,
	// since the delivery's outcome is checked before committing).
	assertRoundTrips(t, "Update", trace.writing(), 4)
	trace.reset()
	if err := db.Update(ctx, func(tx store.Tx) error { return writeMany(ctx, tx, "v") }); err != nil {
		t.Fatal(err)
	}
	// BEGIN; the append lock with the head; the writes with COMMIT.
	assertRoundTrips(t, "Update without FinishDelivery", trace.writing(), 3)

	trace.reset()
	res, err := db.EnqueueApply(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "d2", OrderingKey: "cal_a"},
		func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", writeMany(ctx, tx, "e")
		})
	if err != nil || res.State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
		t.Fatalf("EnqueueApply = %+v, %v; want DONE", res, err)
	}
	// BEGIN with the locks, the PENDING check and the inserts; the append
	// lock with the head; the writes with the outcomes and COMMIT.
	assertRoundTrips(t, "EnqueueApply", trace.writing(), 3)

	// What committed is what was written last, with gap-free cursors.
	for _, prefix := range []string{"u", "v", "e"} {
		for i := range n {
			ev, err := db.GetEvent(ctx, fmt.Sprintf("%s_%d", prefix, i), true)
			if err != nil || ev.GetTitle() != "second" || !proto.Equal(ev.GetRaw(), raw) {
				t.Fatalf("event %s_%d = %v, %v; want the second version with its raw payload", prefix, i, ev, err)
			}
		}
	}
	bounds, err := db.ChangeBounds(ctx)
	if err != nil || bounds.Head != 3*n {
		t.Fatalf("ChangeBounds = %+v, %v; want head %d", bounds, err, 3*n)
	}
	d, err := db.GetDelivery(ctx, id)
	if err != nil || d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
		t.Fatalf("delivery %d = %+v, %v; want DONE", id, d, err)
	}
	// A FinishDelivery of a delivery that does not exist fails its Update,
	// whose writes are sent late: nothing of it commits.
	err = db.Update(ctx, func(tx store.Tx) error {
		if err := tx.PutEvent(ctx, event("lost", "x")); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, 1<<40, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update finishing a missing delivery = %v, want ErrNotFound", err)
	}
	if _, err := db.GetEvent(ctx, "lost", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("event of the failed Update = %v, want ErrNotFound", err)
	}
	// Nor does that of an apply at intake, whose delivery stays PENDING.
	res, err = db.EnqueueApply(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "d3", OrderingKey: "cal_b"},
		func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
			if err := tx.PutEvent(ctx, event("lost2", "x")); err != nil {
				return 0, "", err
			}
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", tx.FinishDelivery(ctx, 1<<40, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
		})
	if err != nil || res.State != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
		t.Fatalf("EnqueueApply whose apply finishes a missing delivery = %+v, %v; want it PENDING", res, err)
	}
	if d, err := db.GetDelivery(ctx, res.ID); err != nil || !strings.Contains(d.LastError, "not found") {
		t.Fatalf("delivery %d = %+v, %v; want the failure as its last error", res.ID, d, err)
	}
	if _, err := db.GetEvent(ctx, "lost2", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("event of the failed apply = %v, want ErrNotFound", err)
	}
}

func assertRoundTrips(t *testing.T, what string, txs [][]string, max int) {
	t.Helper()
	if len(txs) != 1 {
		t.Fatalf("%s: %d transactions wrote events, want 1: %q", what, len(txs), txs)
	}
	if len(txs[0]) > max {
		t.Fatalf("%s: %d round trips, want at most %d:\n%s", what, len(txs[0]), max, strings.Join(txs[0], "\n"))
	}
}

// TestReadChangesOneRoundTrip: reading the change log, which every
// replica's change feed does at each other replica's commit, costs one
// round trip, and still refuses a cursor older than the compacted changes.
func TestReadChangesOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	trace := &statements{}
	// The feed's polls, which read the change log too, stay out of the count.
	db, err := Open(ctx, pgtest.NewDatabase(t), Options{tracer: trace, PollInterval: time.Hour, PollOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now().Add(time.Hour).Truncate(time.Hour)
	for i := range 3 {
		ev := &calsyncv1.CalendarEvent{Id: fmt.Sprint("evt_", i), CalendarId: "cal_a", Provider: "postpress",
			StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Hour))}
		if err := db.Update(ctx, func(tx store.Tx) error {
			_, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	trace.count.Store(0)
	recs, err := db.ReadChanges(ctx, 1, 10)
	if err != nil || len(recs) != 2 || recs[0].Cursor != 2 || recs[1].Cursor != 3 {
		t.Fatalf("ReadChanges(1) = %+v, %v; want cursors 2 and 3", recs, err)
	}
	if n := trace.count.Load(); n != 1 {
		t.Fatalf("ReadChanges took %d round trips, want 1", n)
	}
	if recs, err := db.ReadChanges(ctx, 3, 10); err != nil || len(recs) != 0 {
		t.Fatalf("ReadChanges(head) = %+v, %v; want nothing", recs, err)
	}
	if _, err := db.pool.Exec(ctx, `DELETE FROM changes WHERE cursor <= 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `UPDATE meta SET value = '2' WHERE key = $1`, metaCompacted); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReadChanges(ctx, 1, 10); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("ReadChanges(1) after compacting up to 2 = %v, want ErrCompacted", err)
	}
	if recs, err := db.ReadChanges(ctx, 2, 10); err != nil || len(recs) != 1 || recs[0].Cursor != 3 {
		t.Fatalf("ReadChanges(2) after compacting up to 2 = %+v, %v; want cursor 3", recs, err)
	}
}

// statements counts the round trips of ReadChanges' statements (those
// reading the changes table); other work on the pool (the feed's own
// reads included) may interleave.
type statements struct{ count atomic.Int64 }

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "FROM changes") || strings.Contains(strings.ToLower(d.SQL), "begin") {
		s.count.Add(1)
	}
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
