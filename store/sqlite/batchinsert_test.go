package sqlite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// randomBatch builds n deliveries over a few keys, ordering keys and
// receive times within and beyond the dedupe window of each other, some to
// apply (with DONE, IGNORED, DEAD or a failure) and some not.
func randomBatch(rng *rand.Rand, n int, base time.Time, window time.Duration) []*enqueueRequest {
	outcomes := []calsyncv1.DeliveryState{
		calsyncv1.DeliveryState_DELIVERY_STATE_DONE, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED,
		calsyncv1.DeliveryState_DELIVERY_STATE_DEAD,
	}
	reqs := make([]*enqueueRequest, n)
	for i := range reqs {
		d := store.NewDelivery{
			Provider:    []string{"postpress", "recall"}[rng.IntN(2)],
			DedupKey:    fmt.Sprintf("k%d", rng.IntN(6)),
			OrderingKey: []string{"", "cal_a", "cal_b", "cal_c"}[rng.IntN(4)],
			EventType:   "e",
			Body:        fmt.Appendf(nil, `{"n":%d}`, i),
			// Receive times are not in batch order, as callers' clocks
			// are read before they queue.
			ReceiveTime: base.Add(time.Duration(rng.IntN(5)) * window / 2),
		}
		r := &enqueueRequest{ctx: context.Background(), d: d, done: make(chan enqueueResult, 1)}
		switch rng.IntN(4) {
		case 0: // left to processing
		case 1:
			r.apply = func(context.Context, store.Tx) (calsyncv1.DeliveryState, string, error) {
				return 0, "", fmt.Errorf("apply of %d failed", i)
			}
		default:
			st := outcomes[rng.IntN(len(outcomes))]
			r.apply = func(context.Context, store.Tx) (calsyncv1.DeliveryState, string, error) {
				return st, fmt.Sprintf("applied %d", i), nil
			}
		}
		reqs[i] = r
	}
	return reqs
}

// copyReqs gives each request a fresh start, as a new Enqueue call would.
func copyReqs(reqs []*enqueueRequest) []*enqueueRequest {
	out := make([]*enqueueRequest, len(reqs))
	for i, r := range reqs {
		out[i] = &enqueueRequest{ctx: r.ctx, d: r.d, apply: r.apply, done: make(chan enqueueResult, 1)}
	}
	return out
}

// A batch committed together (one lookup, one INSERT per chunk) stores and
// answers exactly what committing its deliveries one after the other does:
// the same duplicates of the same ids, the same states, the same waiting
// behind a PENDING delivery of the same ordering key, the same ids.
func TestBatchInsertMatchesOneByOne(t *testing.T) {
	ctx := context.Background()
	const window = time.Minute
	base := time.Unix(1_800_000_000, 0)
	for seed := range 12 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 11))
			open := func(name string) *DB {
				db, err := Open(ctx, filepath.Join(t.TempDir(), name), Options{Synchronous: "NORMAL", DedupeWindow: window,
					Now: func() time.Time { return base }})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			together, alone := open("together.db"), open("alone.db")
			// A first batch leaves deliveries stored (some PENDING) for the
			// second, of a size that takes every chunk size, to find.
			for _, n := range []int{1 + rng.IntN(20), 127} {
				reqs := randomBatch(rng, n, base, window)
				got, err := insertLocked(together, copyReqs(reqs))
				if err != nil {
					t.Fatal(err)
				}
				for i, r := range copyReqs(reqs) {
					want, err := insertLocked(alone, []*enqueueRequest{r})
					if err != nil {
						t.Fatal(err)
					}
					if got[i] != want[0] {
						t.Fatalf("delivery %d of %d (%+v): together %+v, alone %+v", i, n, reqs[i].d, got[i], want[0])
					}
				}
			}
			stored := func(db *DB) []store.Delivery {
				ds, err := db.ListDeliveries(ctx, store.DeliveryQuery{})
				if err != nil {
					t.Fatal(err)
				}
				return ds
			}
			a, b := stored(together), stored(alone)
			if len(a) != len(b) {
				t.Fatalf("%d deliveries stored together, %d alone", len(a), len(b))
			}
			for i := range a {
				a[i].ProcessTime, b[i].ProcessTime = time.Time{}, time.Time{}
				if fmt.Sprint(a[i]) != fmt.Sprint(b[i]) {
					t.Errorf("stored together %+v\nstored alone    %+v", a[i], b[i])
				}
			}
		})
	}
}

// An apply at intake may not finish a delivery: its batch decided which
// deliveries wait from the inbox as it was before the batch. It fails like
// any failing apply, leaving its own delivery PENDING, and the delivery it
// tried to finish stays as it was.
func TestApplyAtIntakeCannotFinishDeliveries(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "a.db"), Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waiting, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "w", OrderingKey: "cal_a", Body: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.EnqueueApply(ctx, store.NewDelivery{Provider: "postpress", DedupKey: "x", OrderingKey: "cal_b", Body: []byte("{}")},
		func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "",
				tx.FinishDelivery(ctx, waiting, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
		t.Errorf("delivery whose apply finished another: %v, want PENDING", res.State)
	}
	d, err := db.GetDelivery(ctx, waiting)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
		t.Errorf("delivery an apply tried to finish: %v, want PENDING", d.State)
	}
}
