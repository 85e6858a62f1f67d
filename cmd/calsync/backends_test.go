package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/store/sqlite"
)

// backend names the store a server-level test runs calsync on.
type backend string

const (
	sqliteBackend   backend = "sqlite"
	postgresBackend backend = "postgres"
)

// onBackends runs test once per backend, as the subtests "sqlite" and
// "postgres": the server-level tests where the store could make a
// difference (ingest, watch, resume, snapshot) hold on both.
func onBackends(t *testing.T, test func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(string(b), func(t *testing.T) { test(t, b) })
	}
}

// db returns a fresh --db value of b for this test: a SQLite file in a
// temporary folder, or a new database on the test binary's private
// PostgreSQL, dropped when the test ends.
func (b backend) db(t *testing.T) string {
	t.Helper()
	if b == postgresBackend {
		return pgtest.NewDatabase(t)
	}
	return filepath.Join(t.TempDir(), "calsync.db")
}

// use returns a change to a serveConfig (as postpressServer takes) that
// puts its store on b.
func (b backend) use(t *testing.T) func(*serveConfig) {
	t.Helper()
	db := b.db(t)
	return func(c *serveConfig) { c.dbPath = db }
}

// open opens a fresh store of b for a test that drives a server and
// writes to its store itself; it is closed when the test ends.
func (b backend) open(t *testing.T) store.Store {
	t.Helper()
	st := b.openAt(t, b.db(t))
	t.Cleanup(func() { st.Close() })
	return st
}

// openAt opens the store of b at db (a --db value); the caller closes it.
func (b backend) openAt(t *testing.T, db string) store.Store {
	t.Helper()
	ctx := context.Background()
	var (
		st  store.Store
		err error
	)
	if b == postgresBackend {
		st, err = postgres.Open(ctx, db, postgres.Options{MaxConns: 8})
	} else {
		st, err = sqlite.Open(ctx, db, sqlite.Options{Synchronous: "NORMAL"})
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}
