package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// TestOnBatch checks that every committed delivery is reported in exactly
// one group-commit batch, which is what the batch-size metric relies on.
func TestOnBatch(t *testing.T) {
	var (
		mu      sync.Mutex
		batches []int
	)
	opts := sqlite.Options{OnBatch: func(size int, d time.Duration) {
		if d < 0 {
			t.Errorf("OnBatch duration %v is negative", d)
		}
		mu.Lock()
		batches = append(batches, size)
		mu.Unlock()
	}}
	db := mustOpen(t, filepath.Join(t.TempDir(), "b.db"), opts)
	ctx := context.Background()
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: fmt.Sprint("k", i), Body: []byte("{}")}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, b := range batches {
		if b <= 0 {
			t.Errorf("batch of size %d reported", b)
		}
		total += b
	}
	if total != n {
		t.Errorf("batches %v add up to %d deliveries, want %d", batches, total, n)
	}
}
