package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

func TestRecentEventsStayWithinTheirBytes(t *testing.T) {
	c := newRecentEvents(64 << 10)
	row := make([]byte, 200)
	for i := range 2000 {
		c.add(fmt.Sprintf("ev%04d", i), row)
		if c.size > c.max {
			t.Fatalf("after %d rows: %d bytes kept, bound %d", i+1, c.size, c.max)
		}
		if i == 0 {
			continue
		}
		// ev0000 is read after every add: it stays, the least recently
		// used go first.
		if _, ok := c.get("ev0000"); !ok {
			t.Fatalf("after %d rows the most recently read row was evicted", i+1)
		}
	}
	if _, ok := c.get("ev0001"); ok {
		t.Fatal("the least recently used row is still kept")
	}
	if _, ok := c.get("ev1999"); !ok {
		t.Fatal("the last row added is not kept")
	}
	want := 0
	for id, el := range c.byID {
		want += entrySize(id, el.Value.(*recentEntry).data)
	}
	if c.size != want || c.lru.Len() != len(c.byID) {
		t.Fatalf("size %d for entries of %d bytes; %d in the list, %d in the map", c.size, want, c.lru.Len(), len(c.byID))
	}
	c.add("huge", make([]byte, c.max/32))
	if _, ok := c.get("huge"); ok {
		t.Fatal("a row of a 32nd of the cache was kept")
	}
}

func versionedEvent(id string, version int) *calsyncv1.CalendarEvent {
	return &calsyncv1.CalendarEvent{Id: id, CalendarId: "cal_" + id, Provider: "postpress",
		Title:     fmt.Sprintf("%s v%d", id, version),
		StartTime: timestamppb.New(time.Unix(1e9+int64(version%3)*3600, 0)),
		EndTime:   timestamppb.New(time.Unix(1e9+int64(version%3)*3600+1800, 0)),
		Raw:       &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewNumberValue(float64(version))}}}
}

// checkedGet reads event id in tx twice, through GetEvent (which may
// answer from the writer's cache) and straight from the events table in
// the same transaction, and fails unless the two agree.
func checkedGet(ctx context.Context, stx store.Tx, id string) (*calsyncv1.CalendarEvent, error) {
	got, gotErr := stx.GetEvent(ctx, id, false)
	table, tableErr := getEvent(ctx, stx.(*tx).conn, id, false)
	if errors.Is(gotErr, store.ErrNotFound) != errors.Is(tableErr, store.ErrNotFound) || !proto.Equal(got, table) {
		return nil, fmt.Errorf("GetEvent(%s) gave %v (%v), the table holds %v (%v)", id, got.GetTitle(), gotErr, table.GetTitle(), tableErr)
	}
	return got, gotErr
}

var errRolledBack = errors.New("rolled back on purpose")

// An event read back by the writer comes from its cache only while the
// cache holds what the table holds: writes rolled back with a savepoint
// (a failed apply sharing the inbox's transaction, a failed Update sharing
// a batch) or with their transaction leave nothing behind.
func TestWriterCacheForgetsRolledBackWrites(t *testing.T) {
	ctx := context.Background()
	db := openDurable(t)
	defer db.Close()
	put := func(stx store.Tx, e *calsyncv1.CalendarEvent, fail bool) error {
		if err := stx.PutEvent(ctx, e); err != nil {
			return err
		}
		if fail {
			return errRolledBack
		}
		return nil
	}
	for _, id := range []string{"x", "y", "z"} {
		if err := db.Update(ctx, func(stx store.Tx) error { return put(stx, versionedEvent(id, 1), false) }); err != nil {
			t.Fatal(err)
		}
	}
	// Each is served from the cache once committed.
	hits := db.recent.hits
	if err := db.Update(ctx, func(stx store.Tx) error {
		for _, id := range []string{"x", "y", "z"} {
			if _, err := checkedGet(ctx, stx, id); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if db.recent.hits != hits+3 {
		t.Fatalf("%d of 3 committed events were read from the cache", db.recent.hits-hits)
	}

	apply := func(e *calsyncv1.CalendarEvent, fail bool) store.ApplyFunc {
		return func(ctx context.Context, stx store.Tx) (calsyncv1.DeliveryState, string, error) {
			if err := put(stx, e, fail); err != nil {
				return 0, "", err
			}
			return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", nil
		}
	}
	req := func(key string, a store.ApplyFunc) *enqueueRequest {
		return &enqueueRequest{ctx: ctx, apply: a, done: make(chan enqueueResult, 1), d: store.NewDelivery{
			Provider: "postpress", DedupKey: key, OrderingKey: key, Body: []byte("{}"), ReceiveTime: time.Now()}}
	}
	update := func(e *calsyncv1.CalendarEvent, fail bool) *updateRequest {
		r := &updateRequest{ctx: ctx, done: make(chan error, 1), fn: func(stx store.Tx) error { return put(stx, e, fail) }}
		db.updates <- r
		return r
	}
	batch := func(reqs ...*enqueueRequest) {
		t.Helper()
		commitBatchLocked(t, db, reqs)
		for _, r := range reqs {
			if res := <-r.done; res.err != nil {
				t.Fatalf("delivery %s: %v", r.d.DedupKey, res.err)
			}
		}
	}
	// Applies sharing the inbox's transaction with an Update, the one
	// rewriting y failing: the inserts roll back to their savepoint and
	// run again without it.
	passing := update(versionedEvent("w", 1), false)
	batch(req("k1", apply(versionedEvent("z", 2), false)), req("k2", apply(versionedEvent("y", 2), true)))
	if err := <-passing.done; err != nil {
		t.Fatalf("Update beside the applies: %v", err)
	}
	// Updates sharing a batch, the one rewriting x failing.
	failing, passing := update(versionedEvent("x", 2), true), update(versionedEvent("v", 1), false)
	batch(req("k3", nil))
	if err := <-failing.done; !errors.Is(err, errRolledBack) {
		t.Fatalf("failing Update: %v", err)
	}
	if err := <-passing.done; err != nil {
		t.Fatalf("passing Update: %v", err)
	}
	// A transaction of its own that rolls back.
	if err := db.Update(ctx, func(stx store.Tx) error { return put(stx, versionedEvent("z", 3), true) }); !errors.Is(err, errRolledBack) {
		t.Fatalf("rolled-back Update: %v", err)
	}

	want := map[string]string{"x": "x v1", "y": "y v1", "z": "z v2", "w": "w v1", "v": "v v1"}
	if err := db.Update(ctx, func(stx store.Tx) error {
		for id, title := range want {
			e, err := checkedGet(ctx, stx, id)
			if err != nil {
				return err
			}
			if e.GetTitle() != title {
				return fmt.Errorf("event %s: %q, want %q", id, e.GetTitle(), title)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Many writers at once, Updates and applies at intake sharing batches,
// each rewriting one of a few events and failing now and then: every read
// of an event in the writer agrees with the events table at that moment.
func TestWriterCacheAgreesWithTheTableUnderConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	db := openDurable(t)
	defer db.Close()
	ids := []string{"a", "b", "c", "d"}
	// rewrite reads an event (checked against the table), writes its next
	// version and may fail after writing it.
	rewrite := func(stx store.Tx, rng *rand.Rand, version int) error {
		id := ids[rng.IntN(len(ids))]
		if _, err := checkedGet(ctx, stx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := stx.PutEvent(ctx, versionedEvent(id, version)); err != nil {
			return err
		}
		if _, err := checkedGet(ctx, stx, id); err != nil {
			return err
		}
		if rng.IntN(4) == 0 {
			return errRolledBack
		}
		return nil
	}
	const writers, each = 8, 150
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range each {
				version := w*each + i
				var err error
				if w%2 == 0 {
					err = db.Update(ctx, func(stx store.Tx) error { return rewrite(stx, rng, version) })
				} else {
					_, err = db.EnqueueApply(ctx, store.NewDelivery{Provider: "postpress",
						DedupKey: fmt.Sprintf("%d-%d", w, i), OrderingKey: fmt.Sprintf("k%d", w), Body: []byte("{}"),
						ReceiveTime: time.Now()},
						func(ctx context.Context, stx store.Tx) (calsyncv1.DeliveryState, string, error) {
							if err := rewrite(stx, rng, version); err != nil {
								return 0, "", err
							}
							return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", nil
						})
				}
				if err != nil && !errors.Is(err, errRolledBack) {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := db.Update(ctx, func(stx store.Tx) error {
		for _, id := range ids {
			if _, err := checkedGet(ctx, stx, id); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if db.recent.hits == 0 || db.recent.misses == 0 {
		t.Fatalf("cache hits %d, misses %d: the test did not exercise both", db.recent.hits, db.recent.misses)
	}
}
