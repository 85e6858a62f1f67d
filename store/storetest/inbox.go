package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

const (
	pending = calsyncv1.DeliveryState_DELIVERY_STATE_PENDING
	done    = calsyncv1.DeliveryState_DELIVERY_STATE_DONE
	ignored = calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED
	dead    = calsyncv1.DeliveryState_DELIVERY_STATE_DEAD
)

func delivery(provider, key string) store.NewDelivery {
	return store.NewDelivery{
		Provider:    provider,
		DedupKey:    key,
		MessageID:   "msg_" + key,
		EventType:   "calendar.sync_events",
		OrderingKey: "cal_a",
		Body:        []byte(`{"event":"calendar.sync_events","key":"` + key + `"}`),
		ReceiveTime: t0,
	}
}

// mustEnqueue enqueues d and fails unless it is new.
func mustEnqueue(t *testing.T, s store.Store, d store.NewDelivery) int64 {
	t.Helper()
	id, dup, err := s.Enqueue(context.Background(), d)
	must(t, "Enqueue", err)
	if dup {
		t.Fatalf("Enqueue(%s/%s) reported a duplicate", d.Provider, d.DedupKey)
	}
	return id
}

// mustFinish records the outcome of a delivery.
func mustFinish(t *testing.T, s store.Store, id int64, state calsyncv1.DeliveryState, note string) {
	t.Helper()
	mustUpdate(t, s, func(tx store.Tx) error { return tx.FinishDelivery(context.Background(), id, state, note) })
}

func mustGetDelivery(t *testing.T, s store.Store, id int64) store.Delivery {
	t.Helper()
	d, err := s.GetDelivery(context.Background(), id)
	must(t, "GetDelivery", err)
	return d
}

func deliveryIDs(ds []store.Delivery) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, fmt.Sprint(d.ID))
	}
	return out
}

func idStrings(ids ...int64) []string {
	out := []string{}
	for _, id := range ids {
		out = append(out, fmt.Sprint(id))
	}
	return out
}

var inboxCases = []testCase{
	{"EnqueueGet", func(t *testing.T, h *harness) {
		nd := delivery("recall", "msg_1")
		id := mustEnqueue(t, h.s, nd)
		if id <= 0 {
			t.Fatalf("id %d, want positive", id)
		}
		d := mustGetDelivery(t, h.s, id)
		if d.ID != id || d.Provider != nd.Provider || d.DedupKey != nd.DedupKey || d.MessageID != nd.MessageID ||
			d.EventType != nd.EventType || d.OrderingKey != nd.OrderingKey || !bytes.Equal(d.Body, nd.Body) ||
			d.State != pending || d.Attempts != 0 || d.LastError != "" || !d.ReceiveTime.Equal(nd.ReceiveTime) ||
			!d.ProcessTime.IsZero() {
			t.Fatalf("GetDelivery = %+v, enqueued %+v", d, nd)
		}
		if d.NextAttemptTime.After(nd.ReceiveTime) {
			t.Fatalf("a new delivery is due at %v, after its receive time %v", d.NextAttemptTime, nd.ReceiveTime)
		}
		_, err := h.s.GetDelivery(context.Background(), id+1000)
		wantErr(t, "GetDelivery of a missing id", err, store.ErrNotFound)
	}},
	{"EnqueueInvalid", func(t *testing.T, h *harness) {
		ctx := context.Background()
		_, _, err := h.s.Enqueue(ctx, store.NewDelivery{DedupKey: "k", Body: []byte("x")})
		wantErr(t, "Enqueue without provider", err, store.ErrInvalidArgument)
		_, _, err = h.s.Enqueue(ctx, store.NewDelivery{Provider: "recall", Body: []byte("x")})
		wantErr(t, "Enqueue without dedup key", err, store.ErrInvalidArgument)
	}},
	{"DuplicateSequential", func(t *testing.T, h *harness) {
		ctx := context.Background()
		first := delivery("recall", "msg_1")
		id := mustEnqueue(t, h.s, first)
		again := first
		again.Body = []byte("a different body")
		again.ReceiveTime = t0.Add(time.Minute)
		id2, dup, err := h.s.Enqueue(ctx, again)
		must(t, "Enqueue duplicate", err)
		if !dup || id2 != id {
			t.Fatalf("duplicate Enqueue = (%d, %v), want (%d, true)", id2, dup, id)
		}
		if d := mustGetDelivery(t, h.s, id); !bytes.Equal(d.Body, first.Body) || !d.ReceiveTime.Equal(first.ReceiveTime) {
			t.Fatalf("a duplicate changed the delivery: %+v", d)
		}
		// A finished delivery still absorbs its duplicates.
		mustFinish(t, h.s, id, done, "")
		id3, dup, err := h.s.Enqueue(ctx, again)
		must(t, "Enqueue duplicate of a finished delivery", err)
		if !dup || id3 != id || mustGetDelivery(t, h.s, id).State != done {
			t.Fatalf("duplicate of a finished delivery = (%d, %v), want (%d, true) and no change", id3, dup, id)
		}
		// The key is scoped by provider.
		other := mustEnqueue(t, h.s, delivery("postpress", "msg_1"))
		if other == id {
			t.Fatal("same key of another provider was taken as a duplicate")
		}
	}},
	{"DuplicateConcurrent", func(t *testing.T, h *harness) {
		ctx := context.Background()
		const callers = 24
		type result struct {
			id  int64
			dup bool
			err error
		}
		results := make([]result, callers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-start
				d := delivery("recall", "same")
				d.Body = fmt.Appendf(nil, "caller %d", i)
				id, dup, err := h.s.Enqueue(ctx, d)
				results[i] = result{id, dup, err}
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i, r := range results {
			must(t, fmt.Sprintf("Enqueue of caller %d", i), r.err)
			if r.id != results[0].id {
				t.Fatalf("callers got ids %d and %d for one key", results[0].id, r.id)
			}
			if !r.dup {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d callers stored the delivery, want exactly 1", fresh)
		}
		all, err := h.s.ListDeliveries(ctx, store.DeliveryQuery{})
		must(t, "ListDeliveries", err)
		if len(all) != 1 {
			t.Fatalf("%d deliveries stored, want 1", len(all))
		}
	}},
	{"ConcurrentDistinctDurable", func(t *testing.T, h *harness) {
		ctx := context.Background()
		const callers = 200
		ids := make([]int64, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				id, dup, err := h.s.Enqueue(ctx, delivery("postpress", fmt.Sprintf("body-hash-%03d", i)))
				if err != nil || dup {
					t.Errorf("Enqueue %d = (%d, %v, %v)", i, id, dup, err)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		seen := map[int64]bool{}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("id %d given twice", id)
			}
			seen[id] = true
		}
		s := h.reopen()
		for i, id := range ids {
			d, err := s.GetDelivery(ctx, id)
			must(t, "GetDelivery after reopen", err)
			if want := fmt.Sprintf("body-hash-%03d", i); d.DedupKey != want || d.State != pending {
				t.Fatalf("delivery %d after reopen = %+v, want key %s, pending", id, d, want)
			}
		}
		var pendingIDs []store.Delivery
		for after := int64(0); ; {
			page, err := s.PendingDeliveries(ctx, after, 64)
			must(t, "PendingDeliveries", err)
			if len(page) == 0 {
				break
			}
			pendingIDs = append(pendingIDs, page...)
			after = page[len(page)-1].ID
		}
		if len(pendingIDs) != callers {
			t.Fatalf("%d pending after reopen, want %d", len(pendingIDs), callers)
		}
	}},
	{"PendingOrderAndPaging", func(t *testing.T, h *harness) {
		ctx := context.Background()
		var ids []int64
		for i := range 6 {
			ids = append(ids, mustEnqueue(t, h.s, delivery("recall", fmt.Sprint("k", i))))
		}
		mustFinish(t, h.s, ids[1], done, "")
		mustFinish(t, h.s, ids[4], dead, "unparseable")
		want := idStrings(ids[0], ids[2], ids[3], ids[5])

		all, err := h.s.PendingDeliveries(ctx, 0, 100)
		must(t, "PendingDeliveries", err)
		diffIDs(t, "pending", want, deliveryIDs(all))
		for _, d := range all {
			if len(d.Body) == 0 {
				t.Fatalf("pending delivery %d without its body", d.ID)
			}
		}
		var paged []store.Delivery
		for after := int64(0); ; {
			page, err := h.s.PendingDeliveries(ctx, after, 2)
			must(t, "PendingDeliveries", err)
			if len(page) > 2 {
				t.Fatalf("page of %d with limit 2", len(page))
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1].ID
		}
		diffIDs(t, "paged", want, deliveryIDs(paged))
		page, err := h.s.PendingDeliveries(ctx, ids[2], 1)
		must(t, "PendingDeliveries", err)
		diffIDs(t, "after", idStrings(ids[3]), deliveryIDs(page))
	}},
	{"RecordAttempt", func(t *testing.T, h *harness) {
		ctx := context.Background()
		id := mustEnqueue(t, h.s, delivery("recall", "k"))
		next := t0.Add(30 * time.Second)
		must(t, "RecordAttempt", h.s.RecordAttempt(ctx, id, "recall api: 503", next))
		d := mustGetDelivery(t, h.s, id)
		if d.Attempts != 1 || d.LastError != "recall api: 503" || !d.NextAttemptTime.Equal(next) || d.State != pending {
			t.Fatalf("after one attempt: %+v", d)
		}
		next2 := next.Add(time.Minute)
		must(t, "RecordAttempt", h.s.RecordAttempt(ctx, id, "recall api: 429", next2))
		d = mustGetDelivery(t, h.s, id)
		if d.Attempts != 2 || d.LastError != "recall api: 429" || !d.NextAttemptTime.Equal(next2) {
			t.Fatalf("after two attempts: %+v", d)
		}
		// Still pending, so the worker finds it again.
		page, err := h.s.PendingDeliveries(ctx, 0, 10)
		must(t, "PendingDeliveries", err)
		diffIDs(t, "pending", idStrings(id), deliveryIDs(page))

		wantErr(t, "RecordAttempt of a missing delivery", h.s.RecordAttempt(ctx, id+1000, "x", next), store.ErrNotFound)
		mustFinish(t, h.s, id, done, "")
		wantErr(t, "RecordAttempt of a finished delivery", h.s.RecordAttempt(ctx, id, "x", next), store.ErrFailedPrecondition)
	}},
	{"FinishDelivery", func(t *testing.T, h *harness) {
		ctx := context.Background()
		for _, c := range []struct {
			state calsyncv1.DeliveryState
			note  string
		}{{done, ""}, {ignored, "event type calendar.update ignored"}, {dead, "unparseable body: unexpected EOF"}} {
			t.Run(c.state.String(), func(t *testing.T) {
				id := mustEnqueue(t, h.s, delivery("recall", c.state.String()))
				before := time.Now()
				mustFinish(t, h.s, id, c.state, c.note)
				d := mustGetDelivery(t, h.s, id)
				if d.State != c.state || d.LastError != c.note || d.ProcessTime.Before(before.Add(-time.Second)) {
					t.Fatalf("after FinishDelivery(%v, %q): %+v", c.state, c.note, d)
				}
				page, err := h.s.PendingDeliveries(ctx, id-1, 10)
				must(t, "PendingDeliveries", err)
				if len(page) != 0 {
					t.Fatalf("finished delivery still pending: %+v", page)
				}
			})
		}
		err := h.s.Update(ctx, func(tx store.Tx) error {
			return tx.FinishDelivery(ctx, 987654, done, "")
		})
		wantErr(t, "FinishDelivery of a missing delivery", err, store.ErrNotFound)
		id := mustEnqueue(t, h.s, delivery("recall", "k"))
		err = h.s.Update(ctx, func(tx store.Tx) error {
			return tx.FinishDelivery(ctx, id, pending, "")
		})
		wantErr(t, "FinishDelivery as PENDING", err, store.ErrInvalidArgument)
	}},
	{"RetryDelivery", func(t *testing.T, h *harness) {
		ctx := context.Background()
		_, err := h.s.RetryDelivery(ctx, 4242)
		wantErr(t, "RetryDelivery of a missing delivery", err, store.ErrNotFound)

		id := mustEnqueue(t, h.s, delivery("recall", "k"))
		_, err = h.s.RetryDelivery(ctx, id)
		wantErr(t, "RetryDelivery of a pending delivery", err, store.ErrFailedPrecondition)
		doneID := mustEnqueue(t, h.s, delivery("recall", "k2"))
		mustFinish(t, h.s, doneID, done, "")
		_, err = h.s.RetryDelivery(ctx, doneID)
		wantErr(t, "RetryDelivery of a done delivery", err, store.ErrFailedPrecondition)

		must(t, "RecordAttempt", h.s.RecordAttempt(ctx, id, "timeout", t0))
		mustFinish(t, h.s, id, dead, "gave up: timeout")
		before := time.Now()
		d, err := h.s.RetryDelivery(ctx, id)
		must(t, "RetryDelivery", err)
		if d.ID != id || d.State != pending || !d.ProcessTime.IsZero() || d.NextAttemptTime.Before(before.Add(-time.Second)) ||
			d.NextAttemptTime.After(time.Now().Add(time.Second)) {
			t.Fatalf("RetryDelivery = %+v, want PENDING and due now", d)
		}
		got := mustGetDelivery(t, h.s, id)
		if got.State != pending || got.Attempts != d.Attempts || !got.NextAttemptTime.Equal(d.NextAttemptTime) {
			t.Fatalf("GetDelivery after retry = %+v, RetryDelivery returned %+v", got, d)
		}
		page, err := h.s.PendingDeliveries(ctx, 0, 10)
		must(t, "PendingDeliveries", err)
		diffIDs(t, "pending after retry", idStrings(id), deliveryIDs(page))
		_, err = h.s.RetryDelivery(ctx, id)
		wantErr(t, "second RetryDelivery", err, store.ErrFailedPrecondition)
	}},
	{"ListDeliveries", func(t *testing.T, h *harness) {
		ctx := context.Background()
		r1 := mustEnqueue(t, h.s, delivery("recall", "r1"))
		p1 := mustEnqueue(t, h.s, delivery("postpress", "p1"))
		r2 := mustEnqueue(t, h.s, delivery("recall", "r2"))
		p2 := mustEnqueue(t, h.s, delivery("postpress", "p2"))
		r3 := mustEnqueue(t, h.s, delivery("recall", "r3"))
		mustFinish(t, h.s, r2, dead, "bad")
		mustFinish(t, h.s, p1, dead, "bad")
		mustFinish(t, h.s, r1, done, "")

		list := func(q store.DeliveryQuery) []string {
			t.Helper()
			ds, err := h.s.ListDeliveries(ctx, q)
			must(t, "ListDeliveries", err)
			for _, d := range ds {
				if d.Body != nil {
					t.Fatalf("ListDeliveries returned the body of %d", d.ID)
				}
			}
			return deliveryIDs(ds)
		}
		diffIDs(t, "all", idStrings(r3, p2, r2, p1, r1), list(store.DeliveryQuery{}))
		diffIDs(t, "dead", idStrings(r2, p1), list(store.DeliveryQuery{State: dead}))
		diffIDs(t, "recall", idStrings(r3, r2, r1), list(store.DeliveryQuery{Provider: "recall"}))
		diffIDs(t, "dead recall", idStrings(r2), list(store.DeliveryQuery{State: dead, Provider: "recall"}))
		diffIDs(t, "pending", idStrings(r3, p2), list(store.DeliveryQuery{State: pending}))
		diffIDs(t, "done", idStrings(r1), list(store.DeliveryQuery{State: done}))
		diffIDs(t, "done recall", idStrings(r1), list(store.DeliveryQuery{State: done, Provider: "recall"}))
		diffIDs(t, "done postpress", nil, list(store.DeliveryQuery{State: done, Provider: "postpress"}))
		diffIDs(t, "dead before p2", idStrings(r2, p1), list(store.DeliveryQuery{State: dead, BeforeID: p2}))
		diffIDs(t, "before", idStrings(r2, p1, r1), list(store.DeliveryQuery{BeforeID: p2}))

		var paged []string
		q := store.DeliveryQuery{Limit: 2}
		for {
			page, err := h.s.ListDeliveries(ctx, q)
			must(t, "ListDeliveries", err)
			if len(page) > 2 {
				t.Fatalf("page of %d with limit 2", len(page))
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, deliveryIDs(page)...)
			q.BeforeID = page[len(page)-1].ID
		}
		diffIDs(t, "paged", idStrings(r3, p2, r2, p1, r1), paged)
	}},
	{"InboxStats", func(t *testing.T, h *harness) {
		ctx := context.Background()
		st, err := h.s.InboxStats(ctx)
		must(t, "InboxStats", err)
		if st != (store.InboxStats{}) {
			t.Fatalf("stats of an empty inbox = %+v", st)
		}
		var ids []int64
		for i, recv := range []time.Time{t0.Add(time.Minute), t0, t0.Add(2 * time.Minute), t0.Add(-time.Minute)} {
			d := delivery("recall", fmt.Sprint("k", i))
			d.ReceiveTime = recv
			ids = append(ids, mustEnqueue(t, h.s, d))
		}
		mustFinish(t, h.s, ids[3], dead, "bad")
		st, err = h.s.InboxStats(ctx)
		must(t, "InboxStats", err)
		if st.Pending != 3 || !st.OldestPending.Equal(t0) || st.Dead != 1 {
			t.Fatalf("InboxStats = %+v, want 3 pending since %v, 1 dead", st, t0)
		}
	}},
}

var lifecycleCases = []testCase{
	{"IDStableAcrossReopen", func(t *testing.T, h *harness) {
		id := h.s.ID()
		if id == "" {
			t.Fatal("empty store id")
		}
		if again := h.reopen().ID(); again != id {
			t.Fatalf("store id changed across reopen: %q then %q", id, again)
		}
		other := newHarness(t, h.open)
		if other.s.ID() == id {
			t.Fatalf("two databases share the store id %q", id)
		}
	}},
	{"DataSurvivesReopen", func(t *testing.T, h *harness) {
		ctx := context.Background()
		c := calendar("cal_a", "recall", "r1")
		e := withRaw(t, event("evt_a", "cal_a", at(0), at(time.Hour)))
		mustPut(t, h.s, c, e)
		s := h.reopen()
		got, err := s.GetEvent(ctx, "evt_a", true)
		must(t, "GetEvent after reopen", err)
		diffProto(t, "event after reopen", e, got)
		gotCal, err := s.GetCalendar(ctx, "cal_a")
		must(t, "GetCalendar after reopen", err)
		diffProto(t, "calendar after reopen", c, gotCal)
	}},
	{"ErrClosedAfterClose", func(t *testing.T, h *harness) {
		ctx := context.Background()
		must(t, "Close", h.s.Close())
		s := h.s
		calls := map[string]func() error{
			"GetCalendar": func() error { _, err := s.GetCalendar(ctx, "cal_a"); return err },
			"ListCalendars": func() error {
				_, err := s.ListCalendars(ctx, store.CalendarQuery{})
				return err
			},
			"GetEvent":     func() error { _, err := s.GetEvent(ctx, "evt_a", false); return err },
			"ListEvents":   func() error { _, err := s.ListEvents(ctx, store.EventQuery{}); return err },
			"GetSyncState": func() error { _, err := s.GetSyncState(ctx, "cal_a"); return err },
			"Snapshot": func() error {
				_, err := s.Snapshot(ctx, store.SnapshotFilter{}, func(*calsyncv1.CalendarEvent) error { return nil })
				return err
			},
			"Update":         func() error { return s.Update(ctx, func(store.Tx) error { return nil }) },
			"ReadChanges":    func() error { _, err := s.ReadChanges(ctx, 0, 10); return err },
			"ChangeBounds":   func() error { _, err := s.ChangeBounds(ctx); return err },
			"CompactChanges": func() error { _, err := s.CompactChanges(ctx, time.Now()); return err },
			"Enqueue": func() error {
				_, _, err := s.Enqueue(ctx, delivery("recall", "k"))
				return err
			},
			"PendingDeliveries": func() error { _, err := s.PendingDeliveries(ctx, 0, 10); return err },
			"GetDelivery":       func() error { _, err := s.GetDelivery(ctx, 1); return err },
			"ListDeliveries": func() error {
				_, err := s.ListDeliveries(ctx, store.DeliveryQuery{})
				return err
			},
			"RecordAttempt": func() error { return s.RecordAttempt(ctx, 1, "x", time.Now()) },
			"RetryDelivery": func() error { _, err := s.RetryDelivery(ctx, 1); return err },
			"InboxStats":    func() error { _, err := s.InboxStats(ctx); return err },
			"PruneDeliveries": func() error {
				_, err := s.PruneDeliveries(ctx, time.Now())
				return err
			},
		}
		for name, call := range calls {
			wantErr(t, name+" after Close", call(), store.ErrClosed)
		}
		// Closing again is harmless.
		s.Close()
	}},
	{"CloseWaitsForQueuedDeliveries", func(t *testing.T, h *harness) {
		ctx := context.Background()
		const callers = 50
		ids := make([]int64, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				id, _, err := h.s.Enqueue(ctx, delivery("recall", fmt.Sprint("k", i)))
				if err != nil {
					// Calls that arrive after Close may be refused; none
					// that was answered may be lost.
					if !errors.Is(err, store.ErrClosed) {
						t.Errorf("Enqueue: %v", err)
					}
					return
				}
				ids[i] = id
			})
		}
		time.Sleep(time.Millisecond)
		must(t, "Close", h.s.Close())
		wg.Wait()
		s := h.openStore()
		for i, id := range ids {
			if id == 0 {
				continue
			}
			d, err := s.GetDelivery(ctx, id)
			must(t, fmt.Sprintf("GetDelivery of answered delivery %d", i), err)
			if d.DedupKey != fmt.Sprint("k", i) {
				t.Fatalf("delivery %d has key %q, want k%d", id, d.DedupKey, i)
			}
		}
	}},
}
