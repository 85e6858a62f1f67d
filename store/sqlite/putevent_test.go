package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// TestPutEventAfterGetEvent: an event read and then written in the same
// transaction is updated in place when it keeps its calendar and start,
// and through the upsert otherwise, including when it moved after it was
// read. Every index finds the event where its last version puts it, and
// the database's own integrity check passes.
func TestPutEventAfterGetEvent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	db := mustOpen(t, path, sqlite.Options{Synchronous: "NORMAL"})
	day1 := time.Date(2030, 2, 1, 10, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	version := func(cal, title string, start time.Time, updated time.Time) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{Id: "evt_a", CalendarId: cal, Provider: "postpress", Title: title,
			StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Hour)),
			UpdateTime: timestamppb.New(updated)}
	}
	readThenPut := func(puts ...*calsyncv1.CalendarEvent) {
		t.Helper()
		err := db.Update(ctx, func(tx store.Tx) error {
			if _, err := tx.GetEvent(ctx, "evt_a", false); err != nil {
				return err
			}
			for _, e := range puts {
				if err := tx.PutEvent(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// want checks which title each query finds ("" for none).
	want := func(step string, q store.EventQuery, title string) {
		t.Helper()
		got, err := db.ListEvents(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case title == "" && len(got) != 0:
			t.Errorf("%s: %+v found %q, want nothing", step, q, got[0].GetTitle())
		case title != "" && (len(got) != 1 || got[0].GetTitle() != title):
			t.Errorf("%s: %+v found %d events %v, want %q", step, q, len(got), got, title)
		}
	}
	onDay := func(d time.Time) store.EventQuery { return store.EventQuery{Start: d, End: d.Add(time.Minute)} }

	t0 := time.Unix(1_900_000_000, 0)
	if err := db.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, version("cal_1", "v1", day1, t0)) }); err != nil {
		t.Fatal(err)
	}

	// Same calendar and start: updated in place.
	readThenPut(version("cal_1", "v2", day1, t0.Add(time.Second)))
	want("in place", store.EventQuery{CalendarID: "cal_1"}, "v2")
	want("in place", onDay(day1), "v2")
	want("in place", store.EventQuery{UpdatedSince: t0.Add(time.Second)}, "v2")
	want("in place", store.EventQuery{UpdatedSince: t0.Add(2 * time.Second)}, "")

	// Moved to another calendar, then back, in the transaction that read
	// it: the second write must not trust what was read.
	readThenPut(version("cal_2", "v3", day1, t0.Add(3*time.Second)), version("cal_1", "v4", day1, t0.Add(4*time.Second)))
	want("moved and back", store.EventQuery{CalendarID: "cal_1"}, "v4")
	want("moved and back", store.EventQuery{CalendarID: "cal_2"}, "")
	want("moved and back", onDay(day1), "v4")

	// Moved to another day.
	readThenPut(version("cal_1", "v5", day2, t0.Add(5*time.Second)))
	want("new day", onDay(day1), "")
	want("new day", onDay(day2), "v5")
	want("new day", store.EventQuery{CalendarID: "cal_1", Start: day2, End: day2.Add(time.Minute)}, "v5")

	var check string
	if err := rawDB(t, path).QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Fatalf("integrity_check: %s", check)
	}
}
