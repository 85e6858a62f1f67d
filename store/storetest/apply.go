package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// applyCases check [store.ApplyingInbox]. They check nothing of a backend
// that does not implement it: callers of such a backend fall back to
// Enqueue, which the Inbox cases cover.
var applyCases = []testCase{
	{"AppliedWithItsCommit", testApplyCommitsTogether},
	{"DuplicateIsNotApplied", testApplyDuplicate},
	{"WaitsBehindPendingOfItsKey", testApplyKeepsOrder},
	{"FailureLeavesOnlyItsDeliveryPending", testApplyFailureIsolated},
}

// applyingInbox returns the store as an ApplyingInbox, or nil.
func applyingInbox(h *harness) store.ApplyingInbox {
	a, _ := h.s.(store.ApplyingInbox)
	return a
}

// putEventApply returns an apply that stores ev, appends its creation and
// finishes the delivery DONE, counting its calls.
func putEventApply(ev *calsyncv1.CalendarEvent, calls *atomic.Int32) store.ApplyFunc {
	return func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
		calls.Add(1)
		if err := tx.PutEvent(ctx, ev); err != nil {
			return 0, "", err
		}
		if _, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev}); err != nil {
			return 0, "", err
		}
		return done, "", nil
	}
}

func testApplyCommitsTogether(t *testing.T, h *harness) {
	a := applyingInbox(h)
	if a == nil {
		return
	}
	ctx := context.Background()
	hooks := recordHooks(h.s)
	var calls atomic.Int32
	ev := event("evt_applied", "cal_a", at(time.Hour), at(2*time.Hour))
	res, err := a.EnqueueApply(ctx, delivery("postpress", "k1"), putEventApply(ev, &calls))
	must(t, "EnqueueApply", err)
	if res.Duplicate || res.State != done || calls.Load() != 1 {
		t.Fatalf("EnqueueApply = %+v after %d applies, want a new DONE delivery applied once", res, calls.Load())
	}
	seen := flat(hooks.wait(t, 1))
	if len(seen) != 1 || seen[0].CalendarID != "cal_a" {
		t.Fatalf("OnCommit saw %+v, want the one change of the applied event", seen)
	}
	// Everything is durable: it is all there after a restart.
	s := h.reopen()
	d := mustGetDelivery(t, s, res.ID)
	if d.State != done || d.ProcessTime.IsZero() || !d.NextAttemptTime.IsZero() {
		t.Errorf("stored delivery %+v, want DONE with a process time and no next attempt", d)
	}
	if _, err := s.GetEvent(ctx, "evt_applied", false); err != nil {
		t.Errorf("GetEvent of the applied event: %v", err)
	}
	if b, err := s.ChangeBounds(ctx); err != nil || b.Head != seen[0].Cursor {
		t.Errorf("ChangeBounds = %+v, %v; want head %d", b, err, seen[0].Cursor)
	}
	// The outcome an apply returns is stored with its note.
	a = applyingInbox(h)
	res, err = a.EnqueueApply(ctx, delivery("postpress", "k2"), func(context.Context, store.Tx) (calsyncv1.DeliveryState, string, error) {
		return dead, "no such calendar", nil
	})
	must(t, "EnqueueApply", err)
	if d := mustGetDelivery(t, s, res.ID); d.State != dead || d.LastError != "no such calendar" || res.State != dead {
		t.Errorf("dead-lettered at intake: %+v (result %+v), want DEAD with the note", d, res)
	}
	if st, err := s.InboxStats(ctx); err != nil || st.Pending != 0 || st.Dead != 1 {
		t.Errorf("InboxStats = %+v, %v; want nothing pending, one dead", st, err)
	}
}

func testApplyDuplicate(t *testing.T, h *harness) {
	a := applyingInbox(h)
	if a == nil {
		return
	}
	ctx := context.Background()
	var calls atomic.Int32
	ev := event("evt_dup", "cal_a", at(time.Hour), at(2*time.Hour))
	first, err := a.EnqueueApply(ctx, delivery("postpress", "same"), putEventApply(ev, &calls))
	must(t, "EnqueueApply", err)
	again, err := a.EnqueueApply(ctx, delivery("postpress", "same"), putEventApply(ev, &calls))
	must(t, "EnqueueApply", err)
	if !again.Duplicate || again.ID != first.ID || calls.Load() != 1 {
		t.Fatalf("second EnqueueApply = %+v after %d applies, want a duplicate of %d, not applied", again, calls.Load(), first.ID)
	}
	if b, err := h.s.ChangeBounds(ctx); err != nil || b.Head != 1 {
		t.Errorf("ChangeBounds = %+v, %v; want the one change of the first delivery", b, err)
	}
}

func testApplyKeepsOrder(t *testing.T, h *harness) {
	a := applyingInbox(h)
	if a == nil {
		return
	}
	ctx := context.Background()
	waiting := mustEnqueue(t, h.s, delivery("postpress", "waiting")) // PENDING, cal_a
	var calls atomic.Int32
	behind := delivery("postpress", "behind")
	res, err := a.EnqueueApply(ctx, behind, putEventApply(event("evt_a", "cal_a", at(time.Hour), at(2*time.Hour)), &calls))
	must(t, "EnqueueApply", err)
	if res.State != pending || calls.Load() != 0 {
		t.Fatalf("delivery behind a PENDING one of its key: %+v after %d applies, want PENDING, not applied", res, calls.Load())
	}
	other := delivery("postpress", "other")
	other.OrderingKey = "cal_b"
	res, err = a.EnqueueApply(ctx, other, putEventApply(event("evt_b", "cal_b", at(time.Hour), at(2*time.Hour)), &calls))
	must(t, "EnqueueApply", err)
	if res.State != done || calls.Load() != 1 {
		t.Errorf("delivery of another key: %+v after %d applies, want DONE", res, calls.Load())
	}
	// Once the key has nothing pending, its deliveries apply again.
	mustFinish(t, h.s, waiting, done, "")
	ds, err := h.s.PendingDeliveries(ctx, 0, 10)
	must(t, "PendingDeliveries", err)
	for _, d := range ds {
		mustFinish(t, h.s, d.ID, done, "")
	}
	res, err = a.EnqueueApply(ctx, delivery("postpress", "later"), putEventApply(event("evt_c", "cal_a", at(time.Hour), at(2*time.Hour)), &calls))
	must(t, "EnqueueApply", err)
	if res.State != done {
		t.Errorf("delivery of a key with nothing pending: %+v, want DONE", res)
	}
}

func testApplyFailureIsolated(t *testing.T, h *harness) {
	a := applyingInbox(h)
	if a == nil {
		return
	}
	ctx := context.Background()
	boom := errors.New("boom")
	const n = 24
	results := make([]store.Enqueued, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d := delivery("postpress", fmt.Sprint("iso-", i))
			d.OrderingKey = fmt.Sprint("cal_", i)
			ev := event(fmt.Sprint("evt_", i), d.OrderingKey, at(time.Hour), at(2*time.Hour))
			apply := func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
				// Write first, then fail: the write must not survive.
				if err := tx.PutEvent(ctx, ev); err != nil {
					return 0, "", err
				}
				if _, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev}); err != nil {
					return 0, "", err
				}
				if i%6 == 0 {
					return 0, "", boom
				}
				return done, "", nil
			}
			res, err := a.EnqueueApply(ctx, d, apply)
			if err != nil {
				t.Errorf("EnqueueApply %d: %v", i, err)
			}
			results[i] = res
		})
	}
	// Updates running at the same time may share the batches'
	// transactions; a failed apply must not fail them either.
	const updates = 8
	for i := range updates {
		wg.Go(func() {
			ev := event(fmt.Sprint("upd_", i), "cal_u", at(time.Hour), at(2*time.Hour))
			err := h.s.Update(ctx, func(tx store.Tx) error {
				if err := tx.PutEvent(ctx, ev); err != nil {
					return err
				}
				_, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev})
				return err
			})
			if err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i, res := range results {
		_, getErr := h.s.GetEvent(ctx, fmt.Sprint("evt_", i), false)
		d := mustGetDelivery(t, h.s, res.ID)
		if i%6 == 0 {
			if res.State != pending || d.State != pending || !errors.Is(getErr, store.ErrNotFound) {
				t.Errorf("failed apply %d: result %v, stored %v, event lookup %v; want PENDING and no event", i, res.State, d.State, getErr)
			}
			continue
		}
		if res.State != done || d.State != done || getErr != nil {
			t.Errorf("apply %d: result %v, stored %v, event lookup %v; want DONE and the event", i, res.State, d.State, getErr)
		}
	}
	if b, err := h.s.ChangeBounds(ctx); err != nil || b.Head == 0 {
		t.Fatalf("ChangeBounds = %+v, %v", b, err)
	}
	recs, err := h.s.ReadChanges(ctx, 0, 100)
	must(t, "ReadChanges", err)
	if want := n - (n+5)/6 + updates; len(recs) != want {
		t.Errorf("%d changes in the log, want %d: one per successful apply and per Update", len(recs), want)
	}
	for i := range updates {
		if _, err := h.s.GetEvent(ctx, fmt.Sprint("upd_", i), false); err != nil {
			t.Errorf("event of Update %d: %v", i, err)
		}
	}
}
