package main

import (
	"testing"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
)

// backend is the store a server-level test runs calsync on, with what these
// tests do with it.
type backend struct{ testdb.Backend }

var sqliteBackend = backend{testdb.SQLite}

// onBackends runs test once per backend (see testdb.OnBackends): the
// server-level tests where the store could make a difference (ingest,
// watch, resume, snapshot) hold on both.
func onBackends(t *testing.T, test func(t *testing.T, b backend)) {
	t.Helper()
	testdb.OnBackends(t, func(t *testing.T, b testdb.Backend) { test(t, backend{b}) })
}

// use returns a change to a serveConfig (as postpressServer takes) that
// puts its store on a fresh database of b.
func (b backend) use(t *testing.T) func(*serveConfig) {
	t.Helper()
	db := b.NewDatabase(t)
	return func(c *serveConfig) { c.dbPath = db }
}

// open opens a fresh store of b for a test that drives a server and
// writes to its store itself; it is closed when the test ends.
func (b backend) open(t *testing.T) store.Store {
	t.Helper()
	st := b.openAt(t, b.NewDatabase(t))
	t.Cleanup(func() { st.Close() })
	return st
}

// openAt opens the store at db (a --db value); the caller closes it.
func (b backend) openAt(t *testing.T, db string) store.Store {
	t.Helper()
	st, err := testdb.OpenAt(db)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
