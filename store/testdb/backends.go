package testdb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
)

// Backend names a store backend a test can run on.
type Backend string

// The backends, in the order OnBackends runs them.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// OnBackends runs test once per backend, as the subtests "sqlite" and
// "postgres". A package whose tests use Postgres runs them through
// pgtest.Main, which starts and stops its private PostgreSQL.
func OnBackends(t *testing.T, test func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range []Backend{SQLite, Postgres} {
		t.Run(string(b), func(t *testing.T) { test(t, b) })
	}
}

// NewDatabase returns a fresh database of b, as a --db value: a SQLite
// file in a temporary folder, or a new database on the test binary's
// private PostgreSQL, dropped when the test ends.
func (b Backend) NewDatabase(tb testing.TB) string {
	tb.Helper()
	if b == Postgres {
		return pgtest.NewDatabase(tb)
	}
	return filepath.Join(tb.TempDir(), "calsync.db")
}

// OpenAt opens the store at db, a --db value: a PostgreSQL database for a
// postgres:// URL, else a SQLite file (see Open). The caller closes it.
func OpenAt(db string) (store.Store, error) {
	if postgres.IsURL(db) {
		return postgres.Open(context.Background(), db, postgres.Options{MaxConns: 8})
	}
	return Open(db)
}
