package sqlite

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
)

// batchLog records the sizes of the inbox's group commits (Options.OnBatch).
type batchLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *batchLog) add(size int, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sizes = append(l.sizes, size)
}

func (l *batchLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

var waveKeys atomic.Int64

// enqueueAll enqueues n deliveries at once and returns when all are
// committed.
func enqueueAll(t *testing.T, ctx context.Context, db *DB, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			d := store.NewDelivery{Provider: "postpress", DedupKey: fmt.Sprint("wave-", waveKeys.Add(1)), Body: []byte("{}")}
			if _, _, err := db.Enqueue(ctx, d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// commitOneBatch commits n deliveries as one group commit: the test puts
// all of them in the committer's queue while it holds the writer, which
// the committer needs before it takes the rest of its batch.
func commitOneBatch(t *testing.T, db *DB, n int) {
	t.Helper()
	ctx := context.Background()
	if err := db.lockWriter(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := make([]*enqueueRequest, n)
	for i := range reqs {
		reqs[i] = &enqueueRequest{ctx: ctx, done: make(chan enqueueResult, 1), d: store.NewDelivery{
			Provider: "postpress", DedupKey: fmt.Sprint("wave-", waveKeys.Add(1)), Body: []byte("{}"), ReceiveTime: time.Now()}}
		db.enqueue <- reqs[i]
	}
	db.unlockWriter()
	for _, r := range reqs {
		if res := <-r.done; res.err != nil {
			t.Fatal(res.err)
		}
	}
}

// After a large batch, the committer waits for the rest of the next wave:
// eight deliveries sent together after a batch of sixteen commit together,
// where without the wait the first would usually commit alone.
func TestCommitterGathersTheRestOfAWave(t *testing.T) {
	var batches batchLog
	db := openTemp(t, Options{OnBatch: batches.add, lingerFor: time.Minute, waveGap: time.Minute})
	commitOneBatch(t, db, 16)
	enqueueAll(t, context.Background(), db, 8)
	if got, want := batches.get(), []int{16, 8}; !slices.Equal(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
}

// The wait for the rest of a wave ends after lingerFor: a lone delivery
// after a large batch is committed, late by that much at most.
func TestCommitterWaitsForAWaveOnlySoLong(t *testing.T) {
	const linger = 20 * time.Millisecond
	var batches batchLog
	db := openTemp(t, Options{OnBatch: batches.add, lingerFor: linger, waveGap: time.Minute})
	commitOneBatch(t, db, 16)
	start := time.Now()
	enqueueAll(t, context.Background(), db, 1)
	if took := time.Since(start); took < linger {
		t.Errorf("the lone delivery took %v: it did not wait for the rest of its wave (%v)", took, linger)
	}
	if got, want := batches.get(), []int{16, 1}; !slices.Equal(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
}

// A batch that starts longer than waveGap after the last one does not wait:
// with a wait of a minute allowed, the lone delivery still commits at once.
func TestCommitterDoesNotWaitAfterAPause(t *testing.T) {
	var batches batchLog
	db := openTemp(t, Options{OnBatch: batches.add, lingerFor: time.Minute, waveGap: time.Nanosecond})
	commitOneBatch(t, db, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enqueueAll(t, ctx, db, 1)
	if got, want := batches.get(), []int{16, 1}; !slices.Equal(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
}
