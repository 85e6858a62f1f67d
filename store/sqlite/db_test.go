package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// rawDB opens the database file directly, to look behind the store's back.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		opts sqlite.Options
		ok   bool
	}{
		{"Default", sqlite.Options{}, true},
		{"Full", sqlite.Options{Synchronous: "FULL"}, true},
		{"NormalLowerCase", sqlite.Options{Synchronous: "normal"}, true},
		{"ErrSynchronousOff", sqlite.Options{Synchronous: "OFF"}, false},
		{"ErrSynchronousBogus", sqlite.Options{Synchronous: "FULL; DROP TABLE x"}, false},
		{"ErrNegativeMaxBatch", sqlite.Options{MaxBatch: -1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, err := sqlite.Open(ctx, filepath.Join(dir, c.name+".db"), c.opts)
			if c.ok != (err == nil) {
				t.Fatalf("Open(%+v) error = %v, want ok = %v", c.opts, err, c.ok)
			}
			if db != nil {
				db.Close()
			}
		})
	}
	if _, err := sqlite.Open(ctx, "", sqlite.Options{}); err == nil {
		t.Fatal("Open with an empty path succeeded")
	}
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	mustOpen(t, path, sqlite.Options{}).Close()
	mustOpen(t, path, sqlite.Options{}).Close() // Nothing to apply twice.

	raw := rawDB(t, path)
	var n, version int
	if err := raw.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != version || n < 1 {
		t.Fatalf("schema_migrations has %d rows up to version %d", n, version)
	}
	var mode string
	if err := raw.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}

	// A database migrated by a newer program is refused, not damaged.
	if _, err := raw.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, 'future.sql', 0)`, version+1); err != nil {
		t.Fatal(err)
	}
	if db, err := sqlite.Open(ctx, path, sqlite.Options{}); err == nil {
		db.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

// TestHeadWithEmptyChangeTable checks that the head comes from
// sqlite_sequence: even with every row gone, cursors are not reused.
func TestHeadWithEmptyChangeTable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.db")
	db := mustOpen(t, path, sqlite.Options{})
	appendN(t, db, 3)
	db.Close()
	if _, err := rawDB(t, path).ExecContext(ctx, `DELETE FROM changes`); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, path, sqlite.Options{})
	b, err := db.ChangeBounds(ctx)
	if err != nil || b.Head != 3 {
		t.Fatalf("ChangeBounds = %+v, %v; want head 3", b, err)
	}
	if c := appendN(t, db, 1); c[0] != 4 {
		t.Fatalf("next cursor %d, want 4", c[0])
	}
}

// TestCompactInChunks compacts more than one chunk's worth of changes.
func TestCompactInChunks(t *testing.T) {
	ctx := context.Background()
	db := mustOpen(t, filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Synchronous: "NORMAL"})
	const total = 5_002 // One full chunk, then the rest.
	cursors := appendN(t, db, total)
	n, err := db.CompactChanges(ctx, time.Now().Add(time.Hour))
	if err != nil || n != total-1 {
		t.Fatalf("CompactChanges = %d, %v; want %d", n, err, total-1)
	}
	b, err := db.ChangeBounds(ctx)
	if err != nil || b.Compacted != cursors[total-2] || b.Head != cursors[total-1] {
		t.Fatalf("ChangeBounds = %+v, %v", b, err)
	}
}

// TestTxUnusableAfterUpdate checks that a Tx kept past its Update fails
// instead of writing outside any transaction.
func TestTxUnusableAfterUpdate(t *testing.T) {
	ctx := context.Background()
	db := mustOpen(t, filepath.Join(t.TempDir(), "t.db"), sqlite.Options{})
	var kept store.Tx
	if err := db.Update(ctx, func(tx store.Tx) error { kept = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := kept.PutCalendar(ctx, &calsyncv1.Calendar{Id: "cal_a", Provider: "recall"}); err == nil {
		t.Fatal("PutCalendar on a finished Tx succeeded")
	}
}

// TestEnqueueCancelled checks that a caller that gives up is answered with
// its context's error.
func TestEnqueueCancelled(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "e.db"), sqlite.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "k", Body: []byte("{}")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue with a cancelled context: %v", err)
	}
}

// TestUpdateWaitsForWriterWithContext checks that an Update waiting for
// the writer gives up when its context ends.
func TestUpdateWaitsForWriterWithContext(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{})
	release := make(chan struct{})
	holding := make(chan struct{})
	go db.Update(context.Background(), func(store.Tx) error {
		close(holding)
		<-release
		return nil
	})
	<-holding
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := db.Update(ctx, func(store.Tx) error { return nil })
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Update while the writer is held: %v", err)
	}
}

// appendN commits n CREATED changes, up to 1,000 per transaction.
func appendN(t *testing.T, db *sqlite.DB, n int) []store.Cursor {
	t.Helper()
	ctx := context.Background()
	var out []store.Cursor
	for done := 0; done < n; {
		batch := min(1000, n-done)
		err := db.Update(ctx, func(tx store.Tx) error {
			for i := range batch {
				e := &calsyncv1.CalendarEvent{Id: fmt.Sprintf("evt_%d", done+i), CalendarId: "cal_a", Provider: "recall"}
				c, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e})
				if err != nil {
					return err
				}
				out = append(out, c)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done += batch
	}
	return out
}

// TestUpdateAfterAbandonedUpdatesFillTheQueue: Updates whose context ended
// while the writer was busy leave their requests queued; with a small queue
// (MaxBatch 1) they fill it, and a later Update must still get through.
func TestUpdateAfterAbandonedUpdatesFillTheQueue(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{MaxBatch: 1})
	release := make(chan struct{})
	holding := make(chan struct{})
	go db.Update(context.Background(), func(store.Tx) error {
		close(holding)
		<-release
		return nil
	})
	<-holding
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		if err := db.Update(ctx, func(store.Tx) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Update while the writer is held: %v", err)
		}
		cancel()
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.Update(ctx, func(store.Tx) error { return nil }); err != nil {
		t.Fatalf("Update after abandoned ones: %v", err)
	}
}
