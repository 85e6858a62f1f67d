package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
)

// An Update that becomes the leader while another writer (the inbox's
// committer, a compaction, a pruning) holds the writer lock stops waiting
// when its ctx ends, and its function never runs.
func TestUpdateLeaderHonoursContext(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "w.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.wlock <- struct{}{} // another writer holds the lock
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := make(chan struct{}, 1)
	result := make(chan error, 1)
	go func() {
		result <- db.Update(ctx, func(store.Tx) error { ran <- struct{}{}; return nil })
	}()
	select {
	case err := <-result:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Update = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Update still waits for the writer 5s after its deadline")
	}
	db.unlockWriter()
	// The abandoned request is skipped by the next transaction.
	if err := db.Update(context.Background(), func(store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Error("the Update whose deadline passed ran its function")
	default:
	}
}

// An Enqueue whose ctx ends after its delivery joined a transaction waits
// for that transaction and reports its outcome: the delivery is stored,
// so the answer says so.
func TestEnqueueTakenReportsCommit(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "e.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// An Update queued now runs in the inbox's next transaction, after its
	// inserts: blocking in it holds that transaction open.
	inTx, release := make(chan struct{}), make(chan struct{})
	upd := queueUpdate(db, func(store.Tx) error {
		close(inTx)
		<-release
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	type answer struct {
		id  int64
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		id, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "k", Body: []byte("{}")})
		answered <- answer{id, err}
	}()
	<-inTx
	cancel()
	close(release)
	if err := <-upd.done; err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.err != nil || a.id <= 0 {
		t.Fatalf("Enqueue = (%d, %v), want the committed delivery's id", a.id, a.err)
	}
	if d, err := db.GetDelivery(context.Background(), a.id); err != nil || d.DedupKey != "k" {
		t.Fatalf("GetDelivery(%d) = %+v, %v", a.id, d, err)
	}
}
