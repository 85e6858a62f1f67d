package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// TestReadChangesPrepared reads the change log through the statements
// ReadChanges prepares after its first call: later calls must see the same
// rows, and the compaction point as it is now, not as it was when the
// statement was prepared.
func TestReadChangesPrepared(t *testing.T) {
	ctx := context.Background()
	db := mustOpen(t, filepath.Join(t.TempDir(), "r.db"), sqlite.Options{Synchronous: "NORMAL"})
	cursors := appendN(t, db, 10)
	for i := range 3 {
		recs, err := db.ReadChanges(ctx, cursors[1], 4)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if len(recs) != 4 || recs[0].Cursor != cursors[2] || recs[3].Cursor != cursors[5] {
			t.Fatalf("read %d returned %d changes from %v, want 4 from %d", i, len(recs), recs[0].Cursor, cursors[2])
		}
	}
	if _, err := db.CompactChanges(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReadChanges(ctx, cursors[1], 4); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("read after compaction: %v, want ErrCompacted", err)
	}
	recs, err := db.ReadChanges(ctx, cursors[8], 4)
	if err != nil || len(recs) != 1 || recs[0].Cursor != cursors[9] {
		t.Fatalf("read after the compaction point = %v, %v; want the last change", recs, err)
	}
	db.Close()
	if _, err := db.ReadChanges(ctx, cursors[8], 4); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
}

// Readers that outnumber the read pool, on a store whose statements are
// not prepared yet, all finish: preparing a statement takes a pooled
// connection, which must not wait for a lock those readers hold.
func TestConcurrentFirstReadsFinish(t *testing.T) {
	for round := range 5 {
		db := mustOpen(t, filepath.Join(t.TempDir(), fmt.Sprintf("r%d.db", round)), sqlite.Options{})
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for range 10 {
					if _, err := db.ReadChangePage(context.Background(), 0, 100, 1<<20); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: 64 readers still waiting after 30 s", round)
		}
	}
}

// A missing event's error wraps store.ErrNotFound and names the id, as the
// store's other not-found errors do.
func TestEventNotFoundError(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "nf.db"), sqlite.Options{})
	_, err := db.GetEvent(context.Background(), "evt_missing", false)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetEvent of a missing event = %v, want store.ErrNotFound", err)
	}
	if want := `sqlite: event "evt_missing": store: not found`; err.Error() != want {
		t.Errorf("error %q, want %q", err.Error(), want)
	}
}
