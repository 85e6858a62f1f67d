// Package testdb opens the default store backend for other packages'
// tests. Going through it keeps SQLite a detail of store/ (and of the
// wiring in cmd/): tests elsewhere depend only on store.Store.
package testdb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// Open opens (creating if needed) a store in the database file at path.
// Tests do not need power-loss durability, so it syncs less than the
// server's default; crash safety is the same.
func Open(path string) (store.Store, error) {
	return sqlite.Open(context.Background(), path, sqlite.Options{Synchronous: "NORMAL"})
}

// MustOpen opens a store on a new temporary file, closed when the test
// ends.
func MustOpen(tb testing.TB) store.Store {
	tb.Helper()
	st, err := Open(filepath.Join(tb.TempDir(), "calsync.db"))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
