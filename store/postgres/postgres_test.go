package postgres_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// opener maps the suite's paths to databases: the first open of a path
// creates a fresh database, later opens of it reach the same one, as a
// restart (or another replica) would.
type opener struct {
	mu  sync.Mutex
	dbs map[string]string
}

func (o *opener) open(t *testing.T, path string) store.Store {
	t.Helper()
	o.mu.Lock()
	url, ok := o.dbs[path]
	if !ok {
		url = pgtest.NewDatabase(t)
		o.dbs[path] = url
	}
	o.mu.Unlock()
	db, err := postgres.Open(context.Background(), url, postgres.Options{
		DedupeWindow: storetest.DedupeWindow, TempDir: t.TempDir(), MaxConns: 4})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPostgresConformance runs the store conformance suite on PostgreSQL.
func TestPostgresConformance(t *testing.T) {
	o := &opener{dbs: map[string]string{}}
	storetest.Run(t, o.open)
}

// TestPostgresConformanceShared runs the cases for several instances (as
// several replicas) on one database.
func TestPostgresConformanceShared(t *testing.T) {
	o := &opener{dbs: map[string]string{}}
	storetest.RunShared(t, o.open)
}
