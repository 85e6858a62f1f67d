package sqlite_test

import (
	"context"
	"testing"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
	"github.com/calsync/calsync/store/storetest"
)

// TestConformance runs the store conformance suite on database files.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, path string) store.Store {
		t.Helper()
		return mustOpen(t, path, sqlite.Options{DedupeWindow: storetest.DedupeWindow})
	})
}

// TestConformanceNoBatching runs the inbox cases with group commit off,
// the path Options.MaxBatch = 1 takes.
func TestConformanceNoBatching(t *testing.T) {
	storetest.Run(t, func(t *testing.T, path string) store.Store {
		t.Helper()
		return mustOpen(t, path, sqlite.Options{MaxBatch: 1, Synchronous: "NORMAL", DedupeWindow: storetest.DedupeWindow})
	})
}

// mustOpen opens the database at path and closes it when the test ends.
func mustOpen(t testing.TB, path string, opts sqlite.Options) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConformanceShared runs the cases for several instances on one
// database file, which SQLite's file locking makes take turns.
func TestConformanceShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T, path string) store.Store {
		t.Helper()
		return mustOpen(t, path, sqlite.Options{DedupeWindow: storetest.DedupeWindow})
	})
}
