package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/calsync/calsync/store"
)

// DedupeWindow is the dedupe window the suite expects the stores it opens
// to be configured with (see [store.Inbox]).
const DedupeWindow = time.Hour

// promptly is how long a call whose deadline passed may take to return.
const promptly = 2 * time.Second

// inboxBoundsCases check that the inbox is bounded: in time (dedupe
// window, pruning), in bytes (notes) and in how long a caller waits.
var inboxBoundsCases = []testCase{
	{"DedupeWithinWindowOnly", func(t *testing.T, h *harness) {
		ctx := context.Background()
		enqueue := func(recv time.Time) (int64, bool) {
			t.Helper()
			d := delivery("postpress", "same-body-hash")
			d.ReceiveTime = recv
			id, dup, err := h.s.Enqueue(ctx, d)
			must(t, "Enqueue", err)
			return id, dup
		}
		first, dup := enqueue(t0)
		if dup {
			t.Fatal("the first delivery of a key was taken as a duplicate")
		}
		if id, dup := enqueue(t0.Add(DedupeWindow - time.Second)); !dup || id != first {
			t.Fatalf("a copy within the window = (%d, %v), want (%d, true)", id, dup, first)
		}
		mustFinish(t, h.s, first, done, "")
		// After the window the same key is a new delivery, to be processed.
		later, dup := enqueue(t0.Add(DedupeWindow + time.Second))
		if dup || later == first {
			t.Fatalf("the same key after the window = (%d, %v), want a new delivery", later, dup)
		}
		if d := mustGetDelivery(t, h.s, later); d.State != pending || d.Attempts != 0 {
			t.Fatalf("the new delivery is %+v, want PENDING", d)
		}
		// Its own copies are absorbed by it, also after a restart.
		if id, dup := enqueue(t0.Add(DedupeWindow + time.Minute)); !dup || id != later {
			t.Fatalf("a copy of the new delivery = (%d, %v), want (%d, true)", id, dup, later)
		}
		h.reopen()
		if id, dup := enqueue(t0.Add(DedupeWindow + 2*time.Minute)); !dup || id != later {
			t.Fatalf("a copy after a restart = (%d, %v), want (%d, true)", id, dup, later)
		}
		// A third generation, in one batch with a copy of itself.
		third := delivery("postpress", "same-body-hash")
		third.ReceiveTime = t0.Add(3 * DedupeWindow)
		ids, dups := enqueueTogether(t, h.s, third, third)
		if dups[0] == dups[1] || ids[0] != ids[1] || ids[0] == later {
			t.Fatalf("two copies of a third delivery = ids %v duplicates %v, want one new delivery", ids, dups)
		}
	}},
	{"PruneDeliveries", func(t *testing.T, h *harness) {
		ctx := context.Background()
		enqueueAt := func(key string, recv time.Time) int64 {
			t.Helper()
			d := delivery("recall", key)
			d.ReceiveTime = recv
			return mustEnqueue(t, h.s, d)
		}
		old, cutoff := t0.Add(-48*time.Hour), t0.Add(-24*time.Hour)
		oldDone := enqueueAt("old-done", old)
		oldIgnored := enqueueAt("old-ignored", old)
		oldDead := enqueueAt("old-dead", old)
		oldPending := enqueueAt("old-pending", old)
		recentDone := enqueueAt("recent-done", t0.Add(-time.Minute))
		mustFinish(t, h.s, oldDone, done, "")
		mustFinish(t, h.s, oldIgnored, ignored, "not acted on")
		mustFinish(t, h.s, oldDead, dead, "unparseable")
		mustFinish(t, h.s, recentDone, done, "")

		p, err := h.s.PruneDeliveries(ctx, cutoff)
		must(t, "PruneDeliveries", err)
		if p != (store.PrunedDeliveries{Done: 1, Ignored: 1, Dead: 1}) {
			t.Fatalf("PruneDeliveries = %+v, want one done, one ignored, one dead", p)
		}
		for _, id := range []int64{oldDone, oldIgnored, oldDead} {
			_, err := h.s.GetDelivery(ctx, id)
			wantErr(t, fmt.Sprintf("GetDelivery of pruned delivery %d", id), err, store.ErrNotFound)
		}
		if d := mustGetDelivery(t, h.s, oldPending); d.State != pending {
			t.Fatalf("pending delivery after pruning: %+v", d)
		}
		mustGetDelivery(t, h.s, recentDone)
		// Dedupe still holds inside the window for what was kept.
		d := delivery("recall", "recent-done")
		d.ReceiveTime = t0
		if id, dup, err := h.s.Enqueue(ctx, d); err != nil || !dup || id != recentDone {
			t.Fatalf("copy of a kept delivery = (%d, %v, %v), want (%d, true)", id, dup, err, recentDone)
		}
		if p, err := h.s.PruneDeliveries(ctx, cutoff); err != nil || p.Total() != 0 {
			t.Fatalf("second PruneDeliveries = (%+v, %v), want nothing removed", p, err)
		}
		st, err := h.s.InboxStats(ctx)
		must(t, "InboxStats", err)
		if st.Pending != 1 || st.Dead != 0 {
			t.Fatalf("InboxStats after pruning = %+v, want 1 pending, 0 dead", st)
		}
	}},
	{"PruneKeepsRecentDeadLetters", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// Received long ago but dead-lettered only now: an operator gets
		// the whole retention to look at it.
		d := delivery("recall", "slow-death")
		d.ReceiveTime = time.Now().Add(-365 * 24 * time.Hour)
		id := mustEnqueue(t, h.s, d)
		mustFinish(t, h.s, id, dead, "gave up after 10 attempts")
		p, err := h.s.PruneDeliveries(ctx, time.Now().Add(-time.Hour))
		must(t, "PruneDeliveries", err)
		if p.Total() != 0 {
			t.Fatalf("a dead letter of a moment ago was pruned: %+v", p)
		}
		p, err = h.s.PruneDeliveries(ctx, time.Now().Add(time.Hour))
		must(t, "PruneDeliveries", err)
		if p != (store.PrunedDeliveries{Dead: 1}) {
			t.Fatalf("PruneDeliveries after the retention = %+v, want one dead", p)
		}
	}},
	{"PruneManyInChunks", func(t *testing.T, h *harness) {
		ctx := context.Background()
		const n = 700
		var ds []store.NewDelivery
		for i := range n {
			d := delivery("postpress", fmt.Sprint("k", i))
			d.ReceiveTime = t0.Add(-48 * time.Hour)
			ds = append(ds, d)
		}
		ids, _ := enqueueTogether(t, h.s, ds...)
		mustUpdate(t, h.s, func(tx store.Tx) error {
			for _, id := range ids {
				if err := tx.FinishDelivery(ctx, id, done, ""); err != nil {
					return err
				}
			}
			return nil
		})
		p, err := h.s.PruneDeliveries(ctx, t0)
		must(t, "PruneDeliveries", err)
		if p != (store.PrunedDeliveries{Done: n}) {
			t.Fatalf("PruneDeliveries = %+v, want %d done", p, n)
		}
		all, err := h.s.ListDeliveries(ctx, store.DeliveryQuery{})
		must(t, "ListDeliveries", err)
		if len(all) != 0 {
			t.Fatalf("%d deliveries left after pruning", len(all))
		}
		// Ids are never reused, even once the newest rows are gone.
		if id := mustEnqueue(t, h.s, delivery("postpress", "after")); id <= ids[n-1] {
			t.Fatalf("new delivery got id %d, not above the pruned %d", id, ids[n-1])
		}
	}},
	{"NotesTruncated", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// A provider's field quoted in an error: 500 KB of three-byte
		// characters, so a cut at a byte count would split one.
		huge := "parse time_zone " + strings.Repeat("€", 500_000/3)
		check := func(what, got string) {
			t.Helper()
			if len(got) > store.MaxNoteBytes || !utf8.ValidString(got) || !strings.Contains(got, "truncated") {
				t.Fatalf("%s kept %d bytes (valid UTF-8: %v): %.80q...", what, len(got), utf8.ValidString(got), got)
			}
			prefix := got[:strings.LastIndex(got, "€")]
			if len(prefix) < store.MaxNoteBytes/2 || !strings.HasPrefix(huge, prefix) {
				t.Fatalf("%s kept %q, not a prefix of the note", what, got)
			}
		}
		id := mustEnqueue(t, h.s, delivery("postpress", "k"))
		must(t, "RecordAttempt", h.s.RecordAttempt(ctx, id, huge, t0))
		check("RecordAttempt", mustGetDelivery(t, h.s, id).LastError)
		mustFinish(t, h.s, id, dead, huge)
		check("FinishDelivery", mustGetDelivery(t, h.s, id).LastError)
		ds, err := h.s.ListDeliveries(ctx, store.DeliveryQuery{State: dead})
		must(t, "ListDeliveries", err)
		check("ListDeliveries", ds[0].LastError)
		// A note that fits is kept as it is.
		short := strings.Repeat("é", store.MaxNoteBytes/2)
		id2 := mustEnqueue(t, h.s, delivery("postpress", "k2"))
		mustFinish(t, h.s, id2, dead, short)
		if got := mustGetDelivery(t, h.s, id2).LastError; got != short {
			t.Fatalf("a note of %d bytes became %d bytes", len(short), len(got))
		}
	}},
	{"WriterWaitsHonourContext", func(t *testing.T, h *harness) {
		ctx := context.Background()
		attempted := mustEnqueue(t, h.s, delivery("recall", "attempted"))
		// Hold the writer with an Update that waits on a channel.
		holding, release := make(chan struct{}), make(chan struct{})
		held := make(chan error, 1)
		go func() {
			held <- h.s.Update(ctx, func(store.Tx) error {
				close(holding)
				<-release
				return nil
			})
		}()
		<-holding
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()

		const deadline = 50 * time.Millisecond
		ranLate := make(chan struct{}, 1)
		calls := map[string]func(context.Context) error{
			"Enqueue": func(ctx context.Context) error {
				_, _, err := h.s.Enqueue(ctx, delivery("recall", "late"))
				return err
			},
			"Update": func(ctx context.Context) error {
				return h.s.Update(ctx, func(store.Tx) error { ranLate <- struct{}{}; return nil })
			},
			"RecordAttempt": func(ctx context.Context) error {
				return h.s.RecordAttempt(ctx, attempted, "late", t0)
			},
			"PruneDeliveries": func(ctx context.Context) error {
				_, err := h.s.PruneDeliveries(ctx, t0)
				return err
			},
		}
		for name, call := range calls {
			cctx, cancel := context.WithTimeout(ctx, deadline)
			result := make(chan error, 1)
			began := time.Now()
			go func() { result <- call(cctx) }()
			select {
			case err := <-result:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s while the writer is held = %v, want context.DeadlineExceeded", name, err)
				}
			case <-time.After(deadline + promptly):
				t.Errorf("%s still waiting for the writer %v after its deadline", name, time.Since(began)-deadline)
			}
			cancel()
		}
		close(release)
		released = true
		must(t, "the Update holding the writer", <-held)

		// Nothing the callers gave up on was written behind their back.
		select {
		case <-ranLate:
			t.Error("the Update whose deadline passed ran its function")
		default:
		}
		if _, dup, err := h.s.Enqueue(ctx, delivery("recall", "late")); err != nil || dup {
			t.Errorf("Enqueue after the writer is free = (dup %v, %v): the abandoned delivery was stored", dup, err)
		}
		if d := mustGetDelivery(t, h.s, attempted); d.Attempts != 0 {
			t.Errorf("the abandoned RecordAttempt was recorded: %+v", d)
		}
	}},
}

// enqueueTogether enqueues ds concurrently, so that a batching backend
// commits them in one transaction, and returns their ids and duplicate
// flags in ds's order.
func enqueueTogether(t *testing.T, s store.Store, ds ...store.NewDelivery) ([]int64, []bool) {
	t.Helper()
	ids, dups := make([]int64, len(ds)), make([]bool, len(ds))
	errs := make(chan error, len(ds))
	for i, d := range ds {
		go func() {
			var err error
			ids[i], dups[i], err = s.Enqueue(context.Background(), d)
			errs <- err
		}()
	}
	for range ds {
		must(t, "Enqueue", <-errs)
	}
	return ids, dups
}
