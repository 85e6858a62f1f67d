package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// queueUpdate queues fn as Update does, without waiting for a leader, so
// that the next inbox commit takes it.
func queueUpdate(db *DB, fn func(store.Tx) error) *updateRequest {
	r := &updateRequest{ctx: context.Background(), fn: fn, done: make(chan error, 1)}
	db.updates <- r
	return r
}

func appendEvent(id string) func(store.Tx) error {
	return func(tx store.Tx) error {
		e := &calsyncv1.CalendarEvent{Id: id, CalendarId: "cal_a", Provider: "postpress"}
		if err := tx.PutEvent(context.Background(), e); err != nil {
			return err
		}
		_, err := tx.AppendChange(context.Background(), &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e})
		return err
	}
}

func enqueueReq(key string) *enqueueRequest {
	return &enqueueRequest{ctx: context.Background(),
		d:    store.NewDelivery{Provider: "postpress", DedupKey: key, Body: []byte("{}"), ReceiveTime: time.Now()},
		done: make(chan enqueueResult, 1)}
}

// insertLocked runs insertDeliveries holding the writer lock, and then
// syncs, as the committer does.
func insertLocked(db *DB, reqs []*enqueueRequest) ([]enqueueResult, error) {
	db.wlock <- struct{}{}
	res, err := db.insertDeliveries(reqs, true)
	db.unlockWriter()
	db.sync.flush()
	return res, err
}

// An inbox commit takes the Updates queued at that moment into its own
// transaction: each Update still succeeds or fails alone, hooks see the
// committed ones, and the deliveries commit whatever the Updates do.
func TestInboxCommitCarriesQueuedUpdates(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	var seen []string
	db.OnCommit(func(recs []store.ChangeRecord) {
		for range recs {
			seen = append(seen, "change")
		}
	})

	boom := errors.New("boom")
	ok := queueUpdate(db, appendEvent("evt_ok"))
	bad := queueUpdate(db, func(tx store.Tx) error {
		if err := appendEvent("evt_bad")(tx); err != nil {
			return err
		}
		return boom
	})
	res, err := insertLocked(db, []*enqueueRequest{enqueueReq("k1"), enqueueReq("k2"), enqueueReq("k1")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].id == 0 || res[1].id == res[0].id || !res[2].dup || res[2].id != res[0].id {
		t.Errorf("results = %+v, want two new deliveries and a duplicate of the first", res)
	}
	if err := <-ok.done; err != nil {
		t.Errorf("the good Update: %v", err)
	}
	if err := <-bad.done; !errors.Is(err, boom) {
		t.Errorf("the failing Update: %v, want its own error", err)
	}
	if len(seen) != 1 {
		t.Errorf("hooks saw %d changes, want the good Update's one", len(seen))
	}
	if _, err := db.GetEvent(ctx, "evt_ok", false); err != nil {
		t.Errorf("the good Update's event: %v", err)
	}
	if _, err := db.GetEvent(ctx, "evt_bad", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the failing Update's event: %v, want it rolled back", err)
	}
	for _, key := range []string{"k1", "k2"} {
		var n int
		if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM deliveries WHERE dedup_key = ?`, key).Scan(&n); err != nil || n != 1 {
			t.Errorf("delivery %s stored %d times (%v)", key, n, err)
		}
	}

	// Inserts that fail roll back alone: the Update still commits, and the
	// inbox is told so it can retry its deliveries one by one.
	if _, err := db.w.ExecContext(ctx, `CREATE TRIGGER refuse_k3 BEFORE INSERT ON deliveries
		WHEN NEW.dedup_key = 'k3' BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	upd := queueUpdate(db, appendEvent("evt_after"))
	if _, err := insertLocked(db, []*enqueueRequest{enqueueReq("k4"), enqueueReq("k3")}); err == nil {
		t.Fatal("inserting an invalid delivery succeeded")
	}
	if err := <-upd.done; err != nil {
		t.Errorf("the Update sharing the failed inserts' transaction: %v", err)
	}
	if _, err := db.GetEvent(ctx, "evt_after", false); err != nil {
		t.Errorf("the Update's event: %v", err)
	}
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM deliveries WHERE dedup_key = 'k4'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("a delivery of the failed inserts was kept (%d, %v)", n, err)
	}
}
