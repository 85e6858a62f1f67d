package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// gatedSync holds the store's WAL syncs until the test releases each one,
// with the error it is to return (nil: the real sync runs).
type gatedSync struct {
	started  chan struct{}
	release  chan error
	released atomic.Int32
}

// gateSync installs a gatedSync on db, before any commit the syncer sees.
func gateSync(db *DB) *gatedSync {
	g := &gatedSync{started: make(chan struct{}, 64), release: make(chan error)}
	real := db.sync.sync
	db.sync.sync = func() error {
		g.started <- struct{}{}
		err := <-g.release
		if err == nil {
			err = real()
		}
		g.released.Add(1)
		return err
	}
	return g
}

func openDurable(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "calsync.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if db.sync.log == nil {
		t.Fatal("the writer's commits sync themselves: the pipelined WAL was not found")
	}
	return db
}

// waitForWaiters waits until n calls are blocked waiting for a sync, or
// fails the test after a while (and returns, so the test can let the sync
// go and end).
func waitForWaiters(t *testing.T, db *DB, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for db.sync.waiting.Load() < n {
		if time.Now().After(deadline) {
			t.Errorf("%d calls wait for the sync, want %d", db.sync.waiting.Load(), n)
			return
		}
		time.Sleep(time.Millisecond) // polling a condition, not standing in for one
	}
}

func applyCreate(id string) store.ApplyFunc {
	return func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
		return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", appendEvent(id)(tx)
	}
}

func newDelivery(key string) store.NewDelivery {
	return store.NewDelivery{Provider: "postpress", DedupKey: key, Body: []byte("{}")}
}

// A commit's callers, its hooks and the reads that may see it all wait for
// the WAL's sync: nothing leaves the store before it is durable, while the
// writer goes on committing.
func TestNothingLeavesTheStoreBeforeItsSync(t *testing.T) {
	db := openDurable(t)
	defer db.Close()
	ctx := context.Background()
	g := gateSync(db)
	var early atomic.Int32 // things seen before any sync returned
	var hooked atomic.Int32
	db.OnCommit(func(recs []store.ChangeRecord) {
		hooked.Add(int32(len(recs)))
		if g.released.Load() == 0 {
			early.Add(1)
		}
	})
	done := make(chan error, 4)
	report := func(what string, err error) {
		if g.released.Load() == 0 {
			early.Add(1)
			err = fmt.Errorf("%s returned before the sync (%v)", what, err)
		}
		done <- err
	}
	go func() {
		_, err := db.EnqueueApply(ctx, newDelivery("k1"), applyCreate("evt_1"))
		report("EnqueueApply", err)
	}()
	<-g.started // the delivery's commit is written; its sync is held

	// The writer is not held up: an Update commits meanwhile (and waits).
	go func() { report("Update", db.Update(ctx, appendEvent("evt_2"))) }()
	// A read that may see the commit waits for its sync.
	go func() {
		ds, err := db.ListDeliveries(ctx, store.DeliveryQuery{})
		if err == nil && len(ds) != 1 {
			err = fmt.Errorf("read %d deliveries, want 1", len(ds))
		}
		report("ListDeliveries", err)
	}()
	go func() {
		_, err := db.GetEvent(ctx, "evt_1", false)
		report("GetEvent", err)
	}()
	waitForWaiters(t, db, 2)
	g.release <- nil
	<-g.started // the Update's commit
	g.release <- nil
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if early.Load() != 0 {
		t.Errorf("%d answers, hooks or reads came before any sync", early.Load())
	}
	if hooked.Load() != 2 {
		t.Errorf("hooks saw %d changes, want 2", hooked.Load())
	}
}

// A failed sync stops the store's writing: the commits it was to cover
// fail, as do every later write and every read that may have seen them, and
// no hook ever sees them.
func TestFailedSyncStopsWriting(t *testing.T) {
	db := openDurable(t)
	ctx := context.Background()
	g := gateSync(db)
	var hooked atomic.Int32
	db.OnCommit(func([]store.ChangeRecord) { hooked.Add(1) })
	fire := errors.New("disk on fire")
	enq := make(chan error, 1)
	go func() {
		_, err := db.EnqueueApply(ctx, newDelivery("k1"), applyCreate("evt_1"))
		enq <- err
	}()
	<-g.started
	g.release <- fire
	for what, err := range map[string]error{
		"the commit the failed sync was to cover": <-enq,
		"a later delivery":                        func() error { _, _, err := db.Enqueue(ctx, newDelivery("k2")); return err }(),
		"a later Update":                          db.Update(ctx, appendEvent("evt_2")),
		"a later attempt":                         db.RecordAttempt(ctx, 1, "x", time.Now()),
		"a read":                                  func() error { _, err := db.GetEvent(ctx, "evt_1", false); return err }(),
	} {
		if !errors.Is(err, fire) || !strings.Contains(err.Error(), "stopped writing") {
			t.Errorf("%s: %v, want the sync's error", what, err)
		}
	}
	if hooked.Load() != 0 {
		t.Errorf("hooks saw %d commits after a failed sync", hooked.Load())
	}
	if err := db.Close(); !errors.Is(err, fire) {
		t.Errorf("Close: %v, want the sync's error", err)
	}
}
