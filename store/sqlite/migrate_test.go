package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// TestMigrateEventTimes builds a database as the first schema left it, with
// events whose nanosecond columns were clamped (years 1 and 9999) next to
// ordinary ones, and checks that opening it converts every row: order,
// range filters and paging then see the true instants.
func TestMigrateEventTimes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	raw := rawDB(t, path)
	schema, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, string(schema)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns INTEGER NOT NULL) STRICT;
		INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	type old struct {
		id             string
		start, end     time.Time
		startNs, endNs int64 // as the first schema stored them
	}
	y1 := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	y9999 := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	before := time.Date(1969, 12, 31, 23, 59, 59, 500, time.UTC)
	now := time.Date(2026, 1, 20, 13, 30, 0, 123, time.UTC)
	rows := []old{
		{"evt_a_9999_late", y9999.Add(time.Hour), y9999.Add(2 * time.Hour), math.MaxInt64, math.MaxInt64},
		{"evt_b_9999_early", y9999, y9999.Add(time.Hour), math.MaxInt64, math.MaxInt64},
		{"evt_c_now", now, now.Add(time.Hour), now.UnixNano(), now.Add(time.Hour).UnixNano()},
		{"evt_d_before_epoch", before, now, before.UnixNano(), now.UnixNano()},
		{"evt_e_year1", y1, y1.Add(time.Hour), math.MinInt64, math.MinInt64},
		// An all-day event on 9999-12-31 whose end an older calsync
		// widened into year 10000: no API encoding can carry it.
		{"evt_f_poison", y9999, y9999.Add(24 * time.Hour), math.MaxInt64, math.MaxInt64},
	}
	for _, r := range rows {
		e := &calsyncv1.CalendarEvent{Id: r.id, CalendarId: "cal_a", Provider: "postpress",
			StartTime: timestamppb.New(r.start), EndTime: timestamppb.New(r.end)}
		data, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.ExecContext(ctx, `INSERT INTO events (id, calendar_id, provider, start_ns, end_ns, update_ns, deleted, data)
			VALUES (?, 'cal_a', 'postpress', ?, ?, 0, 0, ?)`, r.id, r.startNs, r.endNs, data); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	var logs bytes.Buffer
	db := mustOpen(t, path, sqlite.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	list := func(q store.EventQuery) []string {
		t.Helper()
		evs, err := db.ListEvents(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range evs {
			ids = append(ids, e.GetId())
		}
		return ids
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s = %v, want %v", what, got, want)
			}
		}
	}
	check("order", list(store.EventQuery{}), "evt_e_year1", "evt_d_before_epoch", "evt_c_now", "evt_b_9999_early", "evt_a_9999_late")
	check("late on 9999-12-31", list(store.EventQuery{Start: y9999.Add(90 * time.Minute)}), "evt_a_9999_late")
	check("the first hour of year 1", list(store.EventQuery{End: y1.Add(time.Minute)}), "evt_e_year1")
	check("around the epoch", list(store.EventQuery{Start: before, End: before.Add(time.Nanosecond)}), "evt_d_before_epoch")
	check("after evt_b", list(store.EventQuery{After: &store.EventKey{StartTime: y9999, ID: "evt_b_9999_early"}}), "evt_a_9999_late")
	if _, err := db.GetEvent(ctx, "evt_f_poison", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the event no encoding can carry is still held (%v)", err)
	}
	if !strings.Contains(logs.String(), "evt_f_poison") {
		t.Errorf("its removal was not logged:\n%s", logs.String())
	}
}
