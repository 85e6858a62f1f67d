package postgres_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

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

// TestPostgresGroupCommit: concurrent webhooks share transactions, and
// every one that was answered is stored.
func TestPostgresGroupCommit(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	var mu sync.Mutex
	var sizes []int
	db, err := postgres.Open(ctx, url, postgres.Options{OnBatch: func(n int, _ time.Duration) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	ids := make(chan int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, dup, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: fmt.Sprint("k", i), Body: []byte("{}")})
			if err != nil || dup {
				t.Errorf("Enqueue = (%v, %v)", dup, err)
			}
			ids <- id
		})
	}
	wg.Wait()
	close(ids)
	db.Close()
	mu.Lock()
	defer mu.Unlock()
	total, largest := 0, 0
	for _, s := range sizes {
		total += s
		largest = max(largest, s)
	}
	if total != n || largest < 2 {
		t.Fatalf("batches %v: want %d deliveries in all, some sharing a transaction", sizes, n)
	}
	if len(sizes) >= n {
		t.Fatalf("%d transactions for %d deliveries: no group commit", len(sizes), n)
	}
	again, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for id := range ids {
		if _, err := again.GetDelivery(ctx, id); err != nil {
			t.Fatalf("delivery %d answered but not stored: %v", id, err)
		}
	}
}
