package server_test

import (
	"context"
	"os"
	"testing"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/store/testdb"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// backend names the store a watch test runs the server on.
type backend string

const (
	sqliteBackend   backend = "sqlite"
	postgresBackend backend = "postgres"
)

// onBackends runs test once per backend, as the subtests "sqlite" and
// "postgres": the watch tests where the store could make a difference
// (ordering under concurrent writers, resume, snapshot, cursors, readers
// behind the tail) hold on both.
func onBackends(t *testing.T, test func(t *testing.T, be backend)) {
	t.Helper()
	for _, be := range []backend{sqliteBackend, postgresBackend} {
		t.Run(string(be), func(t *testing.T) { test(t, be) })
	}
}

// path returns where mustStartServer opens a fresh store of be: "" (a new
// temporary SQLite file) or a new database on the test binary's private
// PostgreSQL.
func (be backend) path(tb testing.TB) string {
	tb.Helper()
	if be == postgresBackend {
		return pgtest.NewDatabase(tb)
	}
	return ""
}

// openTestStore opens the store at path: a PostgreSQL database for a
// postgres:// URL, else a SQLite file.
func openTestStore(path string) (store.Store, error) {
	if postgres.IsURL(path) {
		return postgres.Open(context.Background(), path, postgres.Options{MaxConns: 8})
	}
	return testdb.Open(path)
}
