package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// A batch of applied deliveries that shares its transaction with queued
// Updates isolates a failed apply with one savepoint for the batch: the
// failed delivery and the later one of its ordering key are stored
// PENDING, the others applied, and the Update commits, its changes after
// the applies' in cursor order and in the hooks.
func TestApplyFailureSharingTransactionWithUpdates(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	var hooked []store.Cursor
	db.OnCommit(func(rs []store.ChangeRecord) {
		for _, r := range rs {
			hooked = append(hooked, r.Cursor)
		}
	})
	ev := func(id, cal string) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{Id: id, CalendarId: cal, Provider: "postpress",
			StartTime: timestamppb.New(time.Unix(1e9, 0)), EndTime: timestamppb.New(time.Unix(1e9+3600, 0))}
	}
	write := func(e *calsyncv1.CalendarEvent, fail bool) store.ApplyFunc {
		return func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
			if err := tx.PutEvent(ctx, e); err != nil {
				return 0, "", err
			}
			if _, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e}); err != nil {
				return 0, "", err
			}
			if fail {
				return 0, "", errors.New("boom")
			}
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", nil
		}
	}
	up := &updateRequest{ctx: ctx, done: make(chan error, 1), fn: func(tx store.Tx) error {
		_, _, err := write(ev("upd", "cal_u"), false)(ctx, tx)
		return err
	}}
	db.updates <- up
	req := func(key, cal string, apply store.ApplyFunc) *enqueueRequest {
		return &enqueueRequest{ctx: ctx, apply: apply, done: make(chan enqueueResult, 1), d: store.NewDelivery{
			Provider: "postpress", DedupKey: key, OrderingKey: cal, Body: []byte("{}"), ReceiveTime: time.Now()}}
	}
	reqs := []*enqueueRequest{
		req("ok", "cal_a", write(ev("a", "cal_a"), false)),
		req("fails", "cal_b", write(ev("b", "cal_b"), true)),
		req("behind", "cal_b", write(ev("b2", "cal_b"), false)),
	}
	commitBatchLocked(t, db, reqs)
	want := []calsyncv1.DeliveryState{
		calsyncv1.DeliveryState_DELIVERY_STATE_DONE,
		calsyncv1.DeliveryState_DELIVERY_STATE_PENDING,
		calsyncv1.DeliveryState_DELIVERY_STATE_PENDING,
	}
	for i, r := range reqs {
		res := <-r.done
		if res.err != nil || calsyncv1.DeliveryState(res.state) != want[i] {
			t.Errorf("delivery %s: state %v, err %v; want %v", r.d.DedupKey, calsyncv1.DeliveryState(res.state), res.err, want[i])
		}
	}
	if err := <-up.done; err != nil {
		t.Errorf("Update sharing the transaction: %v", err)
	}
	for id, wantErr := range map[string]error{"a": nil, "upd": nil, "b": store.ErrNotFound, "b2": store.ErrNotFound} {
		if _, err := db.GetEvent(ctx, id, false); !errors.Is(err, wantErr) {
			t.Errorf("GetEvent(%s) = %v, want %v", id, err, wantErr)
		}
	}
	if len(hooked) != 2 || hooked[0] >= hooked[1] {
		t.Errorf("hooks saw cursors %v, want the apply's then the Update's", hooked)
	}
	// The change log holds what the hooks saw, and the rolled back
	// apply's change left no gap in the cursors.
	logged, err := db.ReadChanges(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var cursors []store.Cursor
	for _, r := range logged {
		cursors = append(cursors, r.Cursor)
	}
	if len(hooked) == 2 && (len(cursors) != 2 || cursors[0] != hooked[0] || cursors[1] != hooked[1] || cursors[1] != cursors[0]+1) {
		t.Errorf("the change log holds cursors %v, the hooks saw %v; want the same two, consecutive", cursors, hooked)
	}
}

// A delivery that names the event its apply reads (ApplyEventID) has that
// event looked up with its dedupe check. Whatever the lookup found, every
// read in the transaction sees the table as it is at that read: an event
// found missing and then written earlier in the batch, an event stored but
// no longer in the writer's cache, an event written by an apply and read
// by an Update after another Update's rollback.
func TestApplyEventHint(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	ev := func(id, title string) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{Id: id, CalendarId: "cal_" + id, Provider: "postpress", Title: title,
			StartTime: timestamppb.New(time.Unix(1e9, 0)), EndTime: timestamppb.New(time.Unix(1e9+3600, 0))}
	}
	if err := db.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, ev("stored", "before")) }); err != nil {
		t.Fatal(err)
	}
	db.recent.forget("stored") // the lookup, not the cache, must say it is stored

	// read reads id in the apply and reports what it found: its title, or
	// "" when missing, and whether the lookup had found id missing.
	type found struct {
		title   string
		absent  bool
		readErr error
	}
	read := func(ctx context.Context, stx store.Tx, id string) found {
		f := found{absent: stx.(*tx).absent[id]}
		e, err := stx.GetEvent(ctx, id, false)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			f.readErr = err
		default:
			f.title = e.GetTitle()
		}
		return f
	}
	got := map[string]found{}
	apply := func(key, id, title string) store.ApplyFunc {
		return func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
			got[key] = read(ctx, tx, id)
			if title != "" {
				if err := tx.PutEvent(ctx, ev(id, title)); err != nil {
					return 0, "", err
				}
			}
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", nil
		}
	}
	req := func(key, id string, fn store.ApplyFunc) *enqueueRequest {
		return &enqueueRequest{ctx: ctx, apply: fn, done: make(chan enqueueResult, 1), d: store.NewDelivery{
			Provider: "postpress", DedupKey: key, OrderingKey: "cal_" + id, Body: []byte("{}"),
			ReceiveTime: time.Now(), ApplyEventID: id}}
	}
	// Two Updates share the batch's transaction, after its applies: the
	// first fails (its savepoint is rolled back), the second reads the
	// event an apply wrote.
	failing := &updateRequest{ctx: ctx, done: make(chan error, 1), fn: func(tx store.Tx) error {
		if err := tx.PutEvent(ctx, ev("other", "rolled back")); err != nil {
			return err
		}
		return errors.New("boom")
	}}
	var afterRollback found
	reading := &updateRequest{ctx: ctx, done: make(chan error, 1), fn: func(tx store.Tx) error {
		afterRollback = read(ctx, tx, "new")
		return nil
	}}
	db.updates <- failing
	db.updates <- reading
	unnamed := req("unnamed", "new", apply("unnamed", "new", "")) // names no event: asks nothing
	unnamed.d.ApplyEventID = ""
	reqs := []*enqueueRequest{
		req("first", "new", apply("first", "new", "v1")),
		req("second", "new", apply("second", "new", "v2")),
		req("stored", "stored", apply("stored", "stored", "")),
		unnamed,
	}
	commitBatchLocked(t, db, reqs)
	for _, r := range reqs {
		if res := <-r.done; res.err != nil || calsyncv1.DeliveryState(res.state) != calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
			t.Errorf("delivery %s: state %v, err %v", r.d.DedupKey, calsyncv1.DeliveryState(res.state), res.err)
		}
	}
	if err := <-failing.done; err == nil {
		t.Error("the failing Update succeeded")
	}
	if err := <-reading.done; err != nil {
		t.Errorf("the reading Update: %v", err)
	}
	for key, want := range map[string]found{
		"first":   {title: "", absent: true},    // missing, and known missing without a query
		"second":  {title: "v1", absent: false}, // written by the first apply of the batch
		"stored":  {title: "before"},            // stored before, not in the cache
		"unnamed": {title: "v2"},                // read from what the batch wrote
	} {
		if got[key] != want {
			t.Errorf("apply %s read %+v, want %+v", key, got[key], want)
		}
	}
	if afterRollback != (found{title: "v2"}) {
		t.Errorf("Update after a rolled-back Update read %+v, want the event the applies wrote (v2)", afterRollback)
	}
	e, err := db.GetEvent(ctx, "new", false)
	if err != nil || e.GetTitle() != "v2" {
		t.Fatalf("event new after the batch = %v, %v; want title v2", e, err)
	}
}
