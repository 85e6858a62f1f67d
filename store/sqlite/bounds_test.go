package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// A snapshot whose callback waits (on a watcher that stopped reading) holds
// no read transaction: a TRUNCATE checkpoint of the WAL, which waits for
// every reader of the WAL, completes; and the spool file is gone.
func TestSnapshotCallbackLetsCheckpointComplete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, spoolDir := filepath.Join(dir, "s.db"), filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The store's own checkpointer runs after writes; a checkpoint of the
	// test's that starts while it copies is refused at once, so the test
	// tries again after the store's checkpoint.
	checkpointed := make(chan struct{}, 1)
	db := mustOpen(t, path, sqlite.Options{TempDir: spoolDir, OnCheckpoint: func(int, int, bool) {
		select {
		case checkpointed <- struct{}{}:
		default:
		}
	}})
	if err := db.Update(ctx, func(tx store.Tx) error {
		for i := range 1000 {
			e := &calsyncv1.CalendarEvent{Id: fmt.Sprintf("evt_%04d", i), CalendarId: "cal_a",
				Provider: "postpress", Title: string(make([]byte, 600))}
			if err := tx.PutEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	entered, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	n := 0
	go func() {
		_, err := db.Snapshot(ctx, store.SnapshotFilter{}, func(*calsyncv1.CalendarEvent) error {
			if n == 0 {
				close(entered)
				<-release
			}
			n++
			return nil
		})
		done <- err
	}()
	<-entered
	// A write after the snapshot's instant puts frames in the WAL that a
	// reader of that instant would pin.
	if err := db.Update(ctx, func(tx store.Tx) error {
		return tx.PutEvent(ctx, &calsyncv1.CalendarEvent{Id: "evt_new", CalendarId: "cal_a", Provider: "postpress"})
	}); err != nil {
		t.Fatal(err)
	}
	raw := rawDB(t, path)
	if _, err := raw.ExecContext(ctx, `PRAGMA busy_timeout = 200`); err != nil {
		t.Fatal(err)
	}
	var busy, logFrames, copied int
	for attempt := 0; attempt < 5; attempt++ {
		if err := raw.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &copied); err != nil {
			t.Fatal(err)
		}
		if busy == 0 {
			break
		}
		select {
		case <-checkpointed:
		case <-time.After(time.Second):
		}
	}
	if busy != 0 {
		t.Errorf("wal_checkpoint(TRUNCATE) = busy %d (log %d, checkpointed %d) while a snapshot callback waits", busy, logFrames, copied)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != 1000 {
		t.Fatalf("snapshot handed %d events, want 1000", n)
	}
	if names, _ := os.ReadDir(spoolDir); len(names) != 0 {
		t.Fatalf("spool files left behind: %v", names)
	}
}

// A database created before dedupe became bounded in time keeps its
// deliveries, their dedupe and their ids across the migration.
func TestMigrationToDedupeWindow(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	v1, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	raw := rawDB(t, path)
	recv := time.Now().Add(-time.Minute).UnixNano()
	for _, q := range []string{
		string(v1),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for i, key := range []string{"msg_a", "msg_b", "msg_c"} {
		if _, err := raw.ExecContext(ctx, `INSERT INTO deliveries (provider, dedup_key, message_id, event_type, ordering_key, body, state, receive_ns)
			VALUES ('recall', ?, ?, 'calendar.sync_events', '', x'7b7d', ?, ?)`, key, key, 1+i%2, recv); err != nil {
			t.Fatal(err)
		}
	}
	// The newest delivery is gone, but its id must not come back.
	if _, err := raw.ExecContext(ctx, `DELETE FROM deliveries WHERE dedup_key = 'msg_c'`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db := mustOpen(t, path, sqlite.Options{})
	ds, err := db.ListDeliveries(ctx, store.DeliveryQuery{})
	if err != nil || len(ds) != 2 || ds[0].DedupKey != "msg_b" || ds[1].DedupKey != "msg_a" {
		t.Fatalf("deliveries after the migration = %+v, %v", ds, err)
	}
	id, dup, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "msg_a", Body: []byte("{}")})
	if err != nil || !dup || id != ds[1].ID {
		t.Fatalf("a copy of a migrated delivery = (%d, %v, %v), want (%d, true)", id, dup, err, ds[1].ID)
	}
	id, dup, err = db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "msg_d", Body: []byte("{}")})
	if err != nil || dup || id <= 3 {
		t.Fatalf("a new delivery after the migration = (%d, %v, %v), want an id above 3", id, dup, err)
	}
}
