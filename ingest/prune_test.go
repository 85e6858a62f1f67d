package ingest_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
)

// RunPruning removes finished deliveries once they are older than the
// retention, again and again as time passes, and leaves pending ones.
func TestRunPruning(t *testing.T) {
	st := testdb.MustOpen(t)
	ctx := context.Background()
	base := time.Now()
	var mu sync.Mutex
	now := base
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	enqueue := func(key string) int64 {
		id, _, err := st.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: key, Body: []byte("{}"), ReceiveTime: clock()})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	finished, pending := enqueue("finished"), enqueue("pending")
	if err := st.Update(ctx, func(tx store.Tx) error {
		return tx.FinishDelivery(ctx, finished, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD, "unparseable")
	}); err != nil {
		t.Fatal(err)
	}

	var pruned atomic.Int64
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ingest.RunPruning(runCtx, st, ingest.PruneConfig{Retention: time.Hour, Interval: 5 * time.Millisecond, Now: clock,
			OnPruned: func(p store.PrunedDeliveries) { pruned.Add(p.Dead) }})
	}()
	defer func() { stop(); <-done }()

	// Within the retention nothing goes; past it, the dead letter does.
	if _, err := st.GetDelivery(ctx, finished); err != nil {
		t.Fatalf("pruned within the retention: %v", err)
	}
	mu.Lock()
	now = base.Add(2 * time.Hour)
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := st.GetDelivery(ctx, finished)
		if errors.Is(err, store.ErrNotFound) && pruned.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the finished delivery is still there past the retention (%v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if pruned.Load() != 1 {
		t.Fatalf("OnPruned counted %d dead letters, want 1", pruned.Load())
	}
	if d, err := st.GetDelivery(ctx, pending); err != nil || d.State != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
		t.Fatalf("the pending delivery after pruning: %+v, %v", d, err)
	}
}
