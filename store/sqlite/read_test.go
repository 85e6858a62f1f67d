package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
	"github.com/calsync/calsync/store/storetest"
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

// TestReadChangesFromColumns: a change whose stored encoding lacks what the
// row's other columns hold (a row written another way) is read with those
// columns, by ReadChanges and VisitChangePage alike, beside changes read
// from their encodings alone.
func TestReadChangesFromColumns(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	db := mustOpen(t, path, sqlite.Options{Synchronous: "NORMAL"})
	cursors := appendN(t, db, 5)
	want, err := db.ReadChanges(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The third change's encoding loses its commit time, and its columns
	// are given values the encoding does not hold: only the columns can
	// be where a read gets them from.
	var c calsyncv1.Change
	if err := proto.Unmarshal(want[2].Change, &c); err != nil {
		t.Fatal(err)
	}
	c.CommitTime = nil
	stripped, err := proto.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_600_000_000, 42).UTC()
	if _, err := rawDB(t, path).ExecContext(ctx, `UPDATE changes SET data = ?, calendar_id = 'cal_column', provider = 'column',
		type = ?, commit_ns = ? WHERE cursor = ?`, stripped, int32(calsyncv1.ChangeType_CHANGE_TYPE_DELETED), at.UnixNano(), int64(cursors[2])); err != nil {
		t.Fatal(err)
	}
	want[2] = store.ChangeRecord{Cursor: cursors[2], Type: calsyncv1.ChangeType_CHANGE_TYPE_DELETED, CalendarID: "cal_column",
		Provider: "column", CommitTime: at, Change: stripped}

	got, err := db.ReadChanges(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	storetest.DiffRecords(t, "ReadChanges", want, got)
	var visited []store.ChangeRecord
	if err := db.VisitChangePage(ctx, 0, 10, 1<<20, func(r *store.ChangeRecord) error {
		v := *r
		v.Change = append([]byte(nil), r.Change...)
		visited = append(visited, v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	storetest.DiffRecords(t, "VisitChangePage", want, visited)
	// The others were read from their encodings: the same as their
	// columns, which appendN wrote.
	for _, i := range []int{0, 1, 3, 4} {
		if got[i].CalendarID != "cal_a" || got[i].Provider != "recall" || got[i].Type != calsyncv1.ChangeType_CHANGE_TYPE_CREATED {
			t.Errorf("change %d read as %+v", i, got[i])
		}
	}
}
