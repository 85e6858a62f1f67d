package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
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

// TestPostgresConcurrentUpdatesSomeFail: Updates committed together keep
// their own outcomes. Those that fail after appending leave neither changes
// nor a gap in the cursors; those that succeed keep exactly theirs.
func TestPostgresConcurrentUpdatesSomeFail(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	errFail := errors.New("fail on purpose")
	const n = 64
	var mu sync.Mutex
	kept := map[store.Cursor]bool{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var mine []store.Cursor
			err := db.Update(ctx, func(tx store.Tx) error {
				mine = nil
				for range 2 {
					c, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED,
						Event: &calsyncv1.CalendarEvent{Id: fmt.Sprint("e", i), CalendarId: "cal", Provider: "postpress"}})
					if err != nil {
						return err
					}
					mine = append(mine, c)
				}
				if i%2 == 1 {
					return errFail
				}
				return nil
			})
			switch {
			case i%2 == 1 && !errors.Is(err, errFail):
				t.Errorf("failing Update %d = %v", i, err)
			case i%2 == 0 && err != nil:
				t.Errorf("Update %d = %v", i, err)
			case i%2 == 0:
				mu.Lock()
				for _, c := range mine {
					kept[c] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var all []store.ChangeRecord
	for after := store.Cursor(0); ; {
		page, err := db.ReadChanges(ctx, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor
	}
	if len(all) != n || len(kept) != n {
		t.Fatalf("the log holds %d changes and the successful Updates got %d cursors, want %d of each", len(all), len(kept), n)
	}
	for i, r := range all {
		if r.Cursor != store.Cursor(i+1) || !kept[r.Cursor] {
			t.Fatalf("change %d has cursor %d (kept by a successful Update: %v)", i, r.Cursor, kept[r.Cursor])
		}
	}
}

// TestPostgresServerRestart: PostgreSQL restarts under a running store.
// Everything acknowledged before survives, and the store reconnects by
// itself: calls made once the server is back succeed.
func TestPostgresServerRestart(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "before", Body: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgtest.Shared(t).Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// A call that meets a connection the restart cut fails (the webhook
	// gets a 503 and is retried); the pool replaces it, so calls succeed
	// again within moments.
	var after int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, _, err = db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "after", Body: []byte("{}")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Enqueue still fails 10s after the restart: %v", err)
		}
	}
	for _, id := range []int64{before, after} {
		if _, err := db.GetDelivery(ctx, id); err != nil {
			t.Fatalf("delivery %d after the restart: %v", id, err)
		}
	}
	if _, err := db.ReadChanges(ctx, 0, 10); err != nil {
		t.Fatalf("ReadChanges after the restart: %v", err)
	}
}

// TestPostgresUnavailable: while PostgreSQL is down, every call fails with
// store.ErrUnavailable (the API answers UNAVAILABLE, webhooks 503) and
// Ping says so; once it is back, Ping and every call succeed again without
// reopening the store, and what was acknowledged before is there.
func TestPostgresUnavailable(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping of a running server: %v", err)
	}
	before, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "before", Body: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	srv := pgtest.Shared(t)
	if err := srv.Halt(); err != nil {
		t.Fatalf("halt: %v", err)
	}
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	noop := func(context.Context, store.Tx) (calsyncv1.DeliveryState, string, error) {
		return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", nil
	}
	calls := map[string]func() error{
		"Ping": func() error { return db.Ping(ctx) },
		"Enqueue": func() error {
			_, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "down", Body: []byte("{}")})
			return err
		},
		"EnqueueApply": func() error {
			_, err := db.EnqueueApply(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "down2", Body: []byte("{}")}, noop)
			return err
		},
		"Update":      func() error { return db.Update(ctx, func(store.Tx) error { return nil }) },
		"ReadChanges": func() error { _, err := db.ReadChanges(ctx, 0, 10); return err },
		"GetDelivery": func() error { _, err := db.GetDelivery(ctx, before); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while PostgreSQL is down: %v, want store.ErrUnavailable", name, err)
		}
	}
	if err := srv.Resume(); err != nil {
		t.Fatalf("resume: %v", err)
	}
	resumed = true
	// The pool drops the connections the shutdown cut as they fail; poll
	// until a ping gets through.
	deadline := time.Now().Add(10 * time.Second)
	for db.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Ping still fails 10s after PostgreSQL came back: %v", db.Ping(ctx))
		}
	}
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s once PostgreSQL is back: %v", name, err)
		}
	}
	if _, err := db.GetDelivery(ctx, before); err != nil {
		t.Errorf("delivery acknowledged before the outage: %v", err)
	}
}

// TestPostgresPingWithBusyPool: a pool whose every connection waits (here
// on a table lock) is busy, not unreachable: Ping still succeeds, so health
// does not report an outage under load.
func TestPostgresPingWithBusyPool(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	locker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	lockTx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockTx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// More reads than the pool has connections: those that get one wait
	// for the lock, the others for a connection.
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			if _, err := db.ListEvents(ctx, store.EventQuery{Limit: 1}); err != nil {
				t.Errorf("ListEvents: %v", err)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := locker.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no read waits for the lock")
		}
	}
	pingCtx, cancel := context.WithTimeout(ctx, time.Second)
	err = db.Ping(pingCtx)
	cancel()
	if err != nil {
		t.Errorf("Ping with a busy pool: %v, want nil", err)
	}
	lockTx.Rollback(ctx)
	readers.Wait()
}
