package sqlite

import (
	"context"
	"path/filepath"
	"testing"
)

// openTemp opens a store on a new file in the test's temporary directory,
// closed when the test ends.
func openTemp(t testing.TB, opts Options) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "calsync.db")
	db, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// commitBatchLocked commits reqs as the group committer does: holding the
// writer, which commitBatch releases.
func commitBatchLocked(t testing.TB, db *DB, reqs []*enqueueRequest) {
	t.Helper()
	if err := db.lockWriter(context.Background()); err != nil {
		t.Fatal(err)
	}
	db.commitBatch(reqs)
}
