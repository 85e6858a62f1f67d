package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// hookRecorder collects what OnCommit hooks receive.
type hookRecorder struct {
	mu    sync.Mutex
	calls [][]store.ChangeRecord
	n     int
	// changed is closed and replaced at every call.
	changed chan struct{}
}

func recordHooks(s store.Store) *hookRecorder {
	r := &hookRecorder{changed: make(chan struct{})}
	s.OnCommit(func(recs []store.ChangeRecord) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, append([]store.ChangeRecord(nil), recs...))
		r.n += len(recs)
		close(r.changed)
		r.changed = make(chan struct{})
	})
	return r
}

func (r *hookRecorder) get() [][]store.ChangeRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]store.ChangeRecord(nil), r.calls...)
}

// hookWait is how long a case waits for hooks to report changes: a store
// several processes share reports them from a goroutine of its own,
// shortly after the commit (see [store.ChangeLog.OnCommit]).
const hookWait = 10 * time.Second

// wait returns what the hooks received once they have received at least n
// changes in all, or fails the test after hookWait.
func (r *hookRecorder) wait(t *testing.T, n int) [][]store.ChangeRecord {
	t.Helper()
	deadline := time.NewTimer(hookWait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, changed := r.n, r.changed
		r.mu.Unlock()
		if got >= n {
			return r.get()
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("hooks received %d changes after %v, want %d", got, hookWait, n)
		}
	}
}

// flat returns the records of calls in order.
func flat(calls [][]store.ChangeRecord) []store.ChangeRecord {
	var out []store.ChangeRecord
	for _, c := range calls {
		out = append(out, c...)
	}
	return out
}

var errRollback = errors.New("storetest: roll back")

var updateCases = []testCase{
	{"RollbackOnError", func(t *testing.T, h *harness) {
		ctx := context.Background()
		hooks := recordHooks(h.s)
		mustAppend(t, h.s, created(event("evt_before", "cal_a", at(0), at(time.Hour))))
		before, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)

		err = h.s.Update(ctx, func(tx store.Tx) error {
			must(t, "PutCalendar", tx.PutCalendar(ctx, calendar("cal_a", "recall", "r1")))
			e := event("evt_a", "cal_a", at(0), at(time.Hour))
			must(t, "PutEvent", tx.PutEvent(ctx, e))
			_, err := tx.AppendChange(ctx, created(e))
			must(t, "AppendChange", err)
			must(t, "PutSyncState", tx.PutSyncState(ctx, store.SyncState{CalendarID: "cal_a", Watermark: t0}))
			return fmt.Errorf("fn failed: %w", errRollback)
		})
		wantErr(t, "Update", err, errRollback)

		_, err = h.s.GetCalendar(ctx, "cal_a")
		wantErr(t, "GetCalendar after rollback", err, store.ErrNotFound)
		_, err = h.s.GetEvent(ctx, "evt_a", true)
		wantErr(t, "GetEvent after rollback", err, store.ErrNotFound)
		_, err = h.s.GetSyncState(ctx, "cal_a")
		wantErr(t, "GetSyncState after rollback", err, store.ErrNotFound)
		after, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if after != before {
			t.Fatalf("bounds after rollback = %+v, want %+v", after, before)
		}
		if recs := mustReadAll(t, h.s, before.Head); len(recs) != 0 {
			t.Fatalf("rolled-back changes are readable: %v", recs)
		}
		// A later commit fences the hooks: once they reported it, they
		// reported anything before it.
		mustAppend(t, h.s, created(event("evt_after", "cal_a", at(0), at(time.Hour))))
		if calls := hooks.wait(t, 2); len(calls) != 2 || len(flat(calls)) != 2 {
			t.Fatalf("hooks called %d times, want twice (for the committed changes only)", len(calls))
		}
	}},
	{"ErrorsOfTxCallsReachTheCaller", func(t *testing.T, h *harness) {
		ctx := context.Background()
		err := h.s.Update(ctx, func(tx store.Tx) error {
			return tx.FinishDelivery(ctx, 12345, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
		})
		wantErr(t, "Update with FinishDelivery of a missing delivery", err, store.ErrNotFound)
	}},
}

var changeLogCases = []testCase{
	{"CursorsStrictlyIncrease", func(t *testing.T, h *harness) {
		ctx := context.Background()
		b, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b != (store.ChangeBounds{}) {
			t.Fatalf("bounds of an empty log = %+v, want zero", b)
		}
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		var all []store.Cursor
		all = append(all, mustAppend(t, h.s, created(e), created(e), created(e))...)
		all = append(all, mustAppend(t, h.s, created(e))...)
		all = append(all, mustAppend(t, h.s, created(e), created(e))...)
		for i, c := range all {
			if c == 0 || (i > 0 && c <= all[i-1]) {
				t.Fatalf("cursors not strictly increasing from 1: %v", all)
			}
		}
		b, err = h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b.Head != all[len(all)-1] || b.Compacted != 0 {
			t.Fatalf("bounds = %+v, want head %d, nothing compacted", b, all[len(all)-1])
		}
	}},
	{"RecordContent", func(t *testing.T, h *harness) {
		hooks := recordHooks(h.s)
		e := withRaw(t, event("evt_a", "cal_a", at(0), at(time.Hour)))
		prev := withRaw(t, event("evt_a", "cal_a", at(-time.Hour), at(time.Hour)))
		upd := &calsyncv1.Change{
			Cursor:        "caller's cursor is ignored",
			Type:          calsyncv1.ChangeType_CHANGE_TYPE_UPDATED,
			Event:         e,
			PreviousEvent: prev,
			ChangedFields: []string{"start_time"},
			CommitTime:    ts(at(-24 * time.Hour)),
		}
		cal := calendar("cal_b", "postpress", "owner@example.com")
		calChange := &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, Calendar: cal}
		updBefore := proto.Clone(upd)
		before := time.Now()
		cursors := mustAppend(t, h.s, upd, calChange)
		after := time.Now()
		diffProto(t, "caller's change after AppendChange", updBefore, upd)

		recs := mustReadAll(t, h.s, 0)
		if len(recs) != 2 {
			t.Fatalf("read %d changes, want 2", len(recs))
		}
		calls := hooks.wait(t, len(recs))
		if len(calls) != 1 {
			t.Fatalf("hook called %d times, want 1", len(calls))
		}
		DiffRecords(t, "hook records vs ReadChanges", recs, calls[0])

		commit := recs[0].CommitTime
		if commit.Before(before.Add(-time.Second)) || commit.After(after.Add(time.Second)) {
			t.Fatalf("commit time %v not within [%v, %v]", commit, before, after)
		}
		if !recs[1].CommitTime.Equal(commit) {
			t.Fatalf("changes of one transaction have commit times %v and %v", commit, recs[1].CommitTime)
		}

		wantUpd := proto.Clone(upd).(*calsyncv1.Change)
		wantUpd.Cursor = ""
		wantUpd.CommitTime = ts(commit)
		wantUpd.Event.Raw = nil
		wantUpd.PreviousEvent.Raw = nil
		wantCal := proto.Clone(calChange).(*calsyncv1.Change)
		wantCal.CommitTime = ts(commit)
		for i, want := range []struct {
			change         *calsyncv1.Change
			calendar, prov string
		}{{wantUpd, "cal_a", "recall"}, {wantCal, "cal_b", "postpress"}} {
			r := recs[i]
			if r.Cursor != cursors[i] || r.Type != want.change.GetType() || r.CalendarID != want.calendar || r.Provider != want.prov {
				t.Fatalf("record %d = {cursor %d, %v, %q, %q}, want {cursor %d, %v, %q, %q}", i,
					r.Cursor, r.Type, r.CalendarID, r.Provider, cursors[i], want.change.GetType(), want.calendar, want.prov)
			}
			got := &calsyncv1.Change{}
			must(t, "unmarshal change", proto.Unmarshal(r.Change, got))
			diffProto(t, fmt.Sprintf("change %d", i), want.change, got)
		}
	}},
	{"InvalidChange", func(t *testing.T, h *harness) {
		ctx := context.Background()
		err := h.s.Update(ctx, func(tx store.Tx) error {
			_, err := tx.AppendChange(ctx, &calsyncv1.Change{Event: event("evt_a", "cal_a", at(0), at(time.Hour))})
			return err
		})
		wantErr(t, "AppendChange without type", err, store.ErrInvalidArgument)
	}},
	{"OnCommitOncePerCommitInOrder", func(t *testing.T, h *harness) {
		ctx := context.Background()
		hooks := recordHooks(h.s)
		second := recordHooks(h.s)
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		var want [][]store.Cursor
		for i := range 5 {
			n := i%3 + 1
			changes := make([]*calsyncv1.Change, n)
			for j := range changes {
				changes[j] = created(e)
			}
			want = append(want, mustAppend(t, h.s, changes...))
			// A commit without changes and a rolled-back one call no hook.
			mustPut(t, h.s, e)
			err := h.s.Update(ctx, func(tx store.Tx) error {
				_, err := tx.AppendChange(ctx, created(e))
				must(t, "AppendChange", err)
				return errRollback
			})
			wantErr(t, "Update", err, errRollback)
		}
		total := 0
		for _, w := range want {
			total += len(w)
		}
		for _, r := range []*hookRecorder{hooks, second} {
			calls := r.wait(t, total)
			if len(calls) != len(want) {
				t.Fatalf("hook called %d times, want %d", len(calls), len(want))
			}
			for i, call := range calls {
				var got []store.Cursor
				for _, rec := range call {
					got = append(got, rec.Cursor)
				}
				if fmt.Sprint(got) != fmt.Sprint(want[i]) {
					t.Fatalf("hook call %d has cursors %v, want %v", i, got, want[i])
				}
			}
		}
		DiffRecords(t, "hooked records vs ReadChanges", mustReadAll(t, h.s, 0), flat(hooks.get()))
	}},
	{"OnCommitOrderUnderConcurrentCommits", func(t *testing.T, h *harness) {
		hooks := recordHooks(h.s)
		const writers, commits = 4, 25
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				ctx := context.Background()
				e := event(fmt.Sprintf("evt_%d", w), "cal_a", at(0), at(time.Hour))
				for range commits {
					err := h.s.Update(ctx, func(tx store.Tx) error {
						for range 2 {
							if _, err := tx.AppendChange(ctx, created(e)); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						t.Errorf("Update: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		calls := hooks.wait(t, writers*commits*2)
		if len(calls) != writers*commits {
			t.Fatalf("hook called %d times, want %d", len(calls), writers*commits)
		}
		// The hooks saw every change exactly once, in cursor order.
		DiffRecords(t, "hooked records vs ReadChanges", mustReadAll(t, h.s, 0), flat(calls))
	}},
	{"ReadChangesPaging", func(t *testing.T, h *harness) {
		ctx := context.Background()
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		var want []store.Cursor
		for range 10 {
			want = append(want, mustAppend(t, h.s, created(e))...)
		}
		var got []store.Cursor
		after := store.Cursor(0)
		for {
			page, err := h.s.ReadChanges(ctx, after, 3)
			must(t, "ReadChanges", err)
			if len(page) > 3 {
				t.Fatalf("ReadChanges returned %d changes with limit 3", len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				got = append(got, r.Cursor)
			}
			after = page[len(page)-1].Cursor
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("paged cursors %v, want %v", got, want)
		}
		page, err := h.s.ReadChanges(ctx, want[4], 2)
		must(t, "ReadChanges", err)
		if len(page) != 2 || page[0].Cursor != want[5] || page[1].Cursor != want[6] {
			t.Fatalf("ReadChanges(after %d, 2) = %v", want[4], page)
		}
		page, err = h.s.ReadChanges(ctx, want[9]+100, 10)
		must(t, "ReadChanges past the head", err)
		if len(page) != 0 {
			t.Fatalf("ReadChanges past the head returned %d changes", len(page))
		}
	}},
	{"ReadChangePageBytes", func(t *testing.T, h *harness) {
		ctx := context.Background()
		for i := range 10 {
			e := event(fmt.Sprintf("evt_%d", i), "cal_a", at(0), at(time.Hour))
			e.Title = strings.Repeat("t", 100*(i+1)) // changes of different sizes
			mustAppend(t, h.s, created(e))
		}
		all := mustReadAll(t, h.s, 0)
		// A bound reached in the middle of the third change: the page ends
		// with it.
		bound := len(all[0].Change) + len(all[1].Change) + len(all[2].Change)/2
		page, err := h.s.ReadChangePage(ctx, 0, 100, bound)
		must(t, "ReadChangePage", err)
		if len(page) != 3 || page[2].Cursor != all[2].Cursor {
			t.Fatalf("ReadChangePage(0, 100, %d bytes) returned %d changes, want the first 3", bound, len(page))
		}
		// A bound smaller than one change still returns that change.
		page, err = h.s.ReadChangePage(ctx, all[4].Cursor, 100, 1)
		must(t, "ReadChangePage", err)
		if len(page) != 1 || page[0].Cursor != all[5].Cursor {
			t.Fatalf("ReadChangePage(after %d, 100, 1 byte) = %d changes, want only %d", all[4].Cursor, len(page), all[5].Cursor)
		}
		// The count still bounds a page whose bytes do not.
		page, err = h.s.ReadChangePage(ctx, 0, 4, 1<<30)
		must(t, "ReadChangePage", err)
		if len(page) != 4 {
			t.Fatalf("ReadChangePage(0, 4, 1 GiB) = %d changes, want 4", len(page))
		}
		// Paging by bytes reads the whole log, in order, once.
		var got []store.Cursor
		for after := store.Cursor(0); ; {
			page, err := h.s.ReadChangePage(ctx, after, 100, 700)
			must(t, "ReadChangePage", err)
			if len(page) == 0 {
				break
			}
			size := 0
			for i, r := range page {
				if i < len(page)-1 {
					size += len(r.Change)
				}
				got = append(got, r.Cursor)
			}
			if size >= 700 {
				t.Fatalf("a page of %d changes goes past 700 bytes before its last change (%d)", len(page), size)
			}
			after = page[len(page)-1].Cursor
		}
		var want []store.Cursor
		for _, r := range all {
			want = append(want, r.Cursor)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("paged by bytes %v, want %v", got, want)
		}
		_, err = h.s.ReadChangePage(ctx, 0, 10, 0)
		wantErr(t, "ReadChangePage with no byte bound", err, store.ErrInvalidArgument)
	}},
	{"VisitChangePage", func(t *testing.T, h *harness) {
		ctx := context.Background()
		for i := range 10 {
			e := event(fmt.Sprintf("evt_%d", i), fmt.Sprintf("cal_%d", i%3), at(0), at(time.Hour))
			e.Title = strings.Repeat("t", 100*(i+1))
			mustAppend(t, h.s, created(e))
		}
		all := mustReadAll(t, h.s, 0)
		// visited copies what visit is handed: the store may reuse it.
		visited := func(after store.Cursor, limit, maxBytes int) []store.ChangeRecord {
			t.Helper()
			var got []store.ChangeRecord
			err := h.s.VisitChangePage(ctx, after, limit, maxBytes, func(r *store.ChangeRecord) error {
				c := *r
				c.Change = bytes.Clone(r.Change)
				got = append(got, c)
				return nil
			})
			must(t, "VisitChangePage", err)
			return got
		}
		for _, p := range []struct {
			after           store.Cursor
			limit, maxBytes int
		}{
			{0, 100, 1 << 30}, {0, 4, 1 << 30}, {all[2].Cursor, 100, 1},
			{0, 100, len(all[0].Change) + len(all[1].Change)/2}, {all[9].Cursor, 100, 1 << 30},
		} {
			want, err := h.s.ReadChangePage(ctx, p.after, p.limit, p.maxBytes)
			must(t, "ReadChangePage", err)
			got := visited(p.after, p.limit, p.maxBytes)
			if len(got) != len(want) {
				t.Fatalf("VisitChangePage(%d, %d, %d) visited %d records, ReadChangePage returned %d",
					p.after, p.limit, p.maxBytes, len(got), len(want))
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Cursor != w.Cursor || g.Type != w.Type || g.CalendarID != w.CalendarID || g.Provider != w.Provider ||
					!g.CommitTime.Equal(w.CommitTime) || !bytes.Equal(g.Change, w.Change) {
					t.Fatalf("VisitChangePage(%d, %d, %d) record %d = %+v, ReadChangePage has %+v",
						p.after, p.limit, p.maxBytes, i, g, w)
				}
			}
		}
		// An error from visit ends the page and comes back as it is.
		errStop := errors.New("stop")
		calls := 0
		err := h.s.VisitChangePage(ctx, 0, 100, 1<<30, func(*store.ChangeRecord) error {
			calls++
			return errStop
		})
		if err != errStop || calls != 1 {
			t.Fatalf("VisitChangePage with a failing visit = %v after %d calls, want %v after 1", err, calls, errStop)
		}
		err = h.s.VisitChangePage(ctx, 0, 10, 0, func(*store.ChangeRecord) error { return nil })
		wantErr(t, "VisitChangePage with no byte bound", err, store.ErrInvalidArgument)
	}},
	{"CompactChanges", func(t *testing.T, h *harness) {
		ctx := context.Background()
		hooks := recordHooks(h.s)
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		first := mustAppend(t, h.s, created(e), created(e))
		time.Sleep(5 * time.Millisecond) // Distinct commit times.
		second := mustAppend(t, h.s, created(e), created(e))
		secondCommit := hooks.wait(t, 4)[1][0].CommitTime

		n, err := h.s.CompactChanges(ctx, secondCommit)
		must(t, "CompactChanges", err)
		if n != 2 {
			t.Fatalf("CompactChanges removed %d changes, want 2", n)
		}
		b, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b.Compacted != first[1] || b.Head != second[1] {
			t.Fatalf("bounds = %+v, want compacted %d, head %d", b, first[1], second[1])
		}
		_, err = h.s.ReadChanges(ctx, 0, 10)
		wantErr(t, "ReadChanges(0) after compaction", err, store.ErrCompacted)
		_, err = h.s.ReadChanges(ctx, first[0], 10)
		wantErr(t, "ReadChanges(first) after compaction", err, store.ErrCompacted)
		visits := 0
		err = h.s.VisitChangePage(ctx, 0, 10, 1<<20, func(*store.ChangeRecord) error { visits++; return nil })
		wantErr(t, "VisitChangePage(0) after compaction", err, store.ErrCompacted)
		if visits != 0 {
			t.Fatalf("VisitChangePage(0) after compaction visited %d records before its error", visits)
		}
		recs, err := h.s.ReadChanges(ctx, first[1], 10)
		must(t, "ReadChanges(compacted point)", err)
		if len(recs) != 2 || recs[0].Cursor != second[0] {
			t.Fatalf("ReadChanges after the compaction point = %v", recs)
		}

		// Compacting the same range again removes nothing.
		n, err = h.s.CompactChanges(ctx, secondCommit)
		must(t, "CompactChanges", err)
		if n != 0 {
			t.Fatalf("second CompactChanges removed %d changes", n)
		}
	}},
	{"CompactEverythingKeepsHead", func(t *testing.T, h *harness) {
		ctx := context.Background()
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		var cursors []store.Cursor
		for range 3 {
			cursors = append(cursors, mustAppend(t, h.s, created(e), created(e))...)
		}
		head := cursors[len(cursors)-1]
		n, err := h.s.CompactChanges(ctx, time.Now().Add(time.Hour))
		must(t, "CompactChanges", err)
		if n != int64(len(cursors)-1) {
			t.Fatalf("CompactChanges removed %d changes, want all but the newest (%d)", n, len(cursors)-1)
		}
		b, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b.Head != head || b.Compacted != cursors[len(cursors)-2] {
			t.Fatalf("bounds = %+v, want head %d, compacted %d", b, head, cursors[len(cursors)-2])
		}
		recs, err := h.s.ReadChanges(ctx, head, 10)
		must(t, "ReadChanges(head)", err)
		if len(recs) != 0 {
			t.Fatalf("ReadChanges(head) = %v", recs)
		}
		// The next change continues after the head.
		next := mustAppend(t, h.s, created(e))
		if next[0] <= head {
			t.Fatalf("cursor %d after head %d", next[0], head)
		}
		b, err = h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b.Head != next[0] {
			t.Fatalf("head = %d, want %d", b.Head, next[0])
		}
	}},
	{"CursorsNeverReusedAfterReopen", func(t *testing.T, h *harness) {
		ctx := context.Background()
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		cursors := mustAppend(t, h.s, created(e), created(e), created(e))
		_, err := h.s.CompactChanges(ctx, time.Now().Add(time.Hour))
		must(t, "CompactChanges", err)
		before, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)

		s := h.reopen()
		after, err := s.ChangeBounds(ctx)
		must(t, "ChangeBounds after reopen", err)
		if after != before {
			t.Fatalf("bounds after reopen = %+v, want %+v", after, before)
		}
		next := mustAppend(t, s, created(e))
		if next[0] <= cursors[2] {
			t.Fatalf("cursor %d after reopen reuses one up to %d", next[0], cursors[2])
		}
		_, err = s.ReadChanges(ctx, 0, 10)
		wantErr(t, "ReadChanges(0) after reopen", err, store.ErrCompacted)
	}},
}

// DiffRecords fails t unless got holds the records of want, field by
// field, in order.
func DiffRecords(t *testing.T, what string, want, got []store.ChangeRecord) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Cursor != g.Cursor || w.Type != g.Type || w.CalendarID != g.CalendarID || w.Provider != g.Provider ||
			!w.CommitTime.Equal(g.CommitTime) || string(w.Change) != string(g.Change) {
			t.Fatalf("%s: record %d = %+v, want %+v", what, i, g, w)
		}
	}
}

var snapshotCases = []testCase{
	{"Filters", func(t *testing.T, h *harness) {
		ctx := context.Background()
		a := withRaw(t, event("evt_a", "cal_a", at(0), at(time.Hour)))
		b := event("evt_b", "cal_b", at(0), at(time.Hour))
		c := event("evt_c", "cal_c", at(0), at(time.Hour))
		c.Provider = "postpress"
		gone := event("evt_gone", "cal_a", at(time.Hour), at(2*time.Hour))
		gone.Deleted = true
		mustPut(t, h.s, a, b, c, gone)
		head := mustAppend(t, h.s, created(a))[0]

		snap := func(f store.SnapshotFilter) []string {
			t.Helper()
			var got []string
			cur, err := h.s.Snapshot(ctx, f, func(e *calsyncv1.CalendarEvent) error {
				if e.GetRaw() != nil {
					t.Errorf("snapshot event %s carries its raw payload", e.GetId())
				}
				got = append(got, e.GetId())
				return nil
			})
			must(t, "Snapshot", err)
			if cur != head {
				t.Fatalf("Snapshot cursor %d, want head %d", cur, head)
			}
			return got
		}
		diffIDs(t, "all", []string{"evt_a", "evt_b", "evt_c"}, snap(store.SnapshotFilter{}))
		diffIDs(t, "with deleted", []string{"evt_a", "evt_gone", "evt_b", "evt_c"}, snap(store.SnapshotFilter{IncludeDeleted: true}))
		diffIDs(t, "calendars", []string{"evt_a", "evt_c"}, snap(store.SnapshotFilter{CalendarIDs: []string{"cal_c", "cal_a"}}))
		diffIDs(t, "providers", []string{"evt_c"}, snap(store.SnapshotFilter{Providers: []string{"postpress"}}))
		diffIDs(t, "both", nil, snap(store.SnapshotFilter{CalendarIDs: []string{"cal_a"}, Providers: []string{"postpress"}}))
	}},
	{"StopsAtCallbackError", func(t *testing.T, h *harness) {
		ctx := context.Background()
		mustPut(t, h.s, event("evt_a", "cal_a", at(0), at(time.Hour)), event("evt_b", "cal_a", at(time.Hour), at(2*time.Hour)))
		calls := 0
		_, err := h.s.Snapshot(ctx, store.SnapshotFilter{}, func(*calsyncv1.CalendarEvent) error {
			calls++
			return errRollback
		})
		wantErr(t, "Snapshot", err, errRollback)
		if calls != 1 {
			t.Fatalf("callback called %d times after failing", calls)
		}
	}},
	{"ConsistentWithConcurrentCommits", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// A writer commits events one per transaction, each with its CREATED
		// change. Every snapshot must hold exactly the events whose change is
		// at or before the cursor it returns.
		const total = 150
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range total {
				e := event(fmt.Sprintf("evt_%04d", i), "cal_a", at(time.Duration(i)*time.Minute), at(time.Duration(i+1)*time.Minute))
				err := h.s.Update(ctx, func(tx store.Tx) error {
					if err := tx.PutEvent(ctx, e); err != nil {
						return err
					}
					_, err := tx.AppendChange(ctx, created(e))
					return err
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		}()
		type snapshot struct {
			cursor store.Cursor
			events map[string]bool
		}
		var snaps []snapshot
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
			}
			s := snapshot{events: map[string]bool{}}
			cur, err := h.s.Snapshot(ctx, store.SnapshotFilter{}, func(e *calsyncv1.CalendarEvent) error {
				s.events[e.GetId()] = true
				return nil
			})
			must(t, "Snapshot", err)
			s.cursor = cur
			snaps = append(snaps, s)
		}
		// Map each event to the cursor of its change.
		cursorOf := map[string]store.Cursor{}
		for _, r := range mustReadAll(t, h.s, 0) {
			c := &calsyncv1.Change{}
			must(t, "unmarshal", proto.Unmarshal(r.Change, c))
			cursorOf[c.GetEvent().GetId()] = r.Cursor
		}
		if len(cursorOf) != total {
			t.Fatalf("%d changes, want %d", len(cursorOf), total)
		}
		for _, s := range snaps {
			for id, c := range cursorOf {
				if s.events[id] != (c <= s.cursor) {
					t.Fatalf("snapshot at cursor %d: event %s (change %d) in snapshot = %v", s.cursor, id, c, s.events[id])
				}
			}
		}
		t.Logf("%d snapshots checked", len(snaps))
	}},
}
