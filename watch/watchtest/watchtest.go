// Package watchtest commits changes into a real store and checks what watch
// streams received against the change log. The tests of watch, server and
// cmd/calsync share it; it never fakes a store.
package watchtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
)

// CalendarID returns the id of test calendar n of provider.
func CalendarID(provider string, n int) string {
	return model.CalendarID(provider, "acct", fmt.Sprintf("cal-%d", n))
}

// Event returns a valid event numbered n in calendar calendarID.
func Event(provider, calendarID string, n int, title string) *calsyncv1.CalendarEvent {
	start := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Hour)
	return &calsyncv1.CalendarEvent{
		Id:              model.EventID(provider, calendarID, fmt.Sprintf("evt-%d", n)),
		CalendarId:      calendarID,
		Provider:        provider,
		ProviderEventId: fmt.Sprintf("evt-%d", n),
		Title:           title,
		StartTime:       timestamppb.New(start),
		EndTime:         timestamppb.New(start.Add(30 * time.Minute)),
	}
}

// Created is the CREATED change of ev.
func Created(ev *calsyncv1.CalendarEvent) *calsyncv1.Change {
	return &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev}
}

// Updated is the UPDATED change from prev to next.
func Updated(prev, next *calsyncv1.CalendarEvent) *calsyncv1.Change {
	return &calsyncv1.Change{
		Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: next, PreviousEvent: prev,
		ChangedFields: model.ChangedFields(prev, next),
	}
}

// Deleted is the DELETED change of prev; the stored event becomes a
// tombstone.
func Deleted(prev *calsyncv1.CalendarEvent) *calsyncv1.Change {
	tomb := &calsyncv1.CalendarEvent{
		Id: prev.GetId(), CalendarId: prev.GetCalendarId(), Provider: prev.GetProvider(),
		ProviderEventId: prev.GetProviderEventId(), StartTime: prev.GetStartTime(),
		EndTime: prev.GetEndTime(), Deleted: true,
	}
	return &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_DELETED, Event: tomb, PreviousEvent: prev}
}

// Commit writes the events of changes and appends the changes in one
// transaction, as ingestion does, and returns their cursors.
func Commit(tb testing.TB, st store.Store, changes ...*calsyncv1.Change) []store.Cursor {
	tb.Helper()
	cursors, err := TryCommit(context.Background(), st, changes...)
	if err != nil {
		tb.Fatalf("commit changes: %v", err)
	}
	return cursors
}

// TryCommit is [Commit] for goroutines other than the test's.
func TryCommit(ctx context.Context, st store.Store, changes ...*calsyncv1.Change) ([]store.Cursor, error) {
	var cursors []store.Cursor
	err := st.Update(ctx, func(tx store.Tx) error {
		cursors = cursors[:0]
		for _, c := range changes {
			if c.GetEvent() != nil {
				if err := tx.PutEvent(ctx, c.GetEvent()); err != nil {
					return err
				}
			}
			if c.GetCalendar() != nil {
				if err := tx.PutCalendar(ctx, c.GetCalendar()); err != nil {
					return err
				}
			}
			cur, err := tx.AppendChange(ctx, c)
			if err != nil {
				return err
			}
			cursors = append(cursors, cur)
		}
		return nil
	})
	return cursors, err
}

// Log returns every change after the cursor after, in cursor order.
func Log(tb testing.TB, st store.Store, after store.Cursor) []store.ChangeRecord {
	tb.Helper()
	var all []store.ChangeRecord
	for {
		recs, err := st.ReadChanges(context.Background(), after, 1000)
		if err != nil {
			tb.Fatalf("read change log: %v", err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		after = recs[len(recs)-1].Cursor
	}
}

// CheckStream fails tb unless got, the cursors of the changes a stream
// received, is exactly the part of log that keep selects: same order, no
// gap, no duplicate.
func CheckStream(tb testing.TB, name string, log []store.ChangeRecord, keep func(store.ChangeRecord) bool, got []store.Cursor) {
	tb.Helper()
	var want []store.Cursor
	for _, r := range log {
		if keep == nil || keep(r) {
			want = append(want, r.Cursor)
		}
	}
	if len(got) != len(want) {
		tb.Errorf("%s: received %d changes, the log holds %d matching ones", name, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			tb.Errorf("%s: change %d has cursor %d, the log says %d", name, i, got[i], want[i])
			return
		}
	}
}

// Decode returns the position of an opaque cursor of st, failing tb if it is
// not one.
func Decode(tb testing.TB, st store.Store, cursor string) store.Cursor {
	tb.Helper()
	pos, err := watch.NewCursorCodec(st.ID()).Decode(cursor)
	if err != nil {
		tb.Fatalf("decode cursor %q: %v", cursor, err)
	}
	return pos
}
