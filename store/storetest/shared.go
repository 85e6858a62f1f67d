package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// RunShared runs the cases for several store instances on one database, as
// several processes (replicas) would have it open. Call it for backends
// whose open may be called again for a path whose store is still open, and
// then returns another instance over the same database.
func RunShared(t *testing.T, open OpenFunc) {
	t.Helper()
	for _, c := range sharedCases {
		t.Run("Shared/"+c.name, func(t *testing.T) {
			c.run(t, newHarness(t, open))
		})
	}
}

// openAnother opens one more instance on the case's database, closed when
// the test ends.
func (h *harness) openAnother() store.Store {
	h.t.Helper()
	return h.openStore()
}

// follower reads the change log the way a watcher does: from a cursor,
// forward, remembering everything it has seen.
type follower struct {
	s     store.Store
	after store.Cursor
	seen  []store.ChangeRecord
}

// poll reads everything committed after the follower's cursor.
func (f *follower) poll(t *testing.T) {
	t.Helper()
	for {
		page, err := f.s.ReadChanges(context.Background(), f.after, 100)
		if err != nil {
			t.Errorf("ReadChanges(%d): %v", f.after, err)
			return
		}
		if len(page) == 0 {
			return
		}
		f.seen = append(f.seen, page...)
		f.after = page[len(page)-1].Cursor
	}
}

// checkGapFree fails unless recs have consecutive cursors.
func checkGapFree(t *testing.T, what string, recs []store.ChangeRecord) {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		if recs[i].Cursor != recs[i-1].Cursor+1 {
			t.Fatalf("%s: cursor %d follows %d: a gap", what, recs[i].Cursor, recs[i-1].Cursor)
		}
	}
}

var sharedCases = []testCase{
	{"SameIDAndData", func(t *testing.T, h *harness) {
		other := h.openAnother()
		if h.s.ID() != other.ID() {
			t.Fatalf("two instances on one database have ids %q and %q", h.s.ID(), other.ID())
		}
		e := event("evt_a", "cal_a", at(0), at(time.Hour))
		mustPut(t, h.s, e)
		got, err := other.GetEvent(context.Background(), "evt_a", false)
		must(t, "GetEvent through the other instance", err)
		diffProto(t, "event", e, got)
	}},
	{"ConcurrentWritersOneOrder", func(t *testing.T, h *harness) {
		const instances, writers, commits = 3, 3, 10
		stores := []store.Store{h.s}
		for range instances - 1 {
			stores = append(stores, h.openAnother())
		}
		hooks := make([]*hookRecorder, instances)
		for i, s := range stores {
			hooks[i] = recordHooks(s)
		}
		// Followers on every instance read while the writers write.
		followers := make([]*follower, instances)
		for i, s := range stores {
			followers[i] = &follower{s: s}
		}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for _, f := range followers {
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					f.poll(t)
				}
			})
		}
		var mu sync.Mutex
		returned := map[store.Cursor]string{}
		var writersWG sync.WaitGroup
		for i, s := range stores {
			for w := range writers {
				writersWG.Go(func() {
					for c := range commits {
						e := event(fmt.Sprintf("evt_%d_%d_%d", i, w, c), "cal_a", at(0), at(time.Hour))
						cursors := mustAppend(t, s, created(e), created(e))
						mu.Lock()
						for _, cur := range cursors {
							if prev, dup := returned[cur]; dup {
								t.Errorf("cursor %d handed out twice (%s and %s)", cur, prev, e.GetId())
							}
							returned[cur] = e.GetId()
						}
						mu.Unlock()
					}
				})
			}
		}
		writersWG.Wait()
		close(stop)
		readers.Wait()

		all := mustReadAll(t, h.s, 0)
		if want := instances * writers * commits * 2; len(all) != want {
			t.Fatalf("the log holds %d changes, want %d", len(all), want)
		}
		checkGapFree(t, "the log", all)
		for _, r := range all {
			if _, ok := returned[r.Cursor]; !ok {
				t.Fatalf("cursor %d in the log was returned by no AppendChange", r.Cursor)
			}
		}
		// Every follower, having read while commits landed, saw the one
		// order: nothing skipped, nothing twice.
		for i, f := range followers {
			f.poll(t)
			diffRecords(t, fmt.Sprintf("follower on instance %d", i), all, f.seen)
		}
		// Each instance's hooks saw its own commits, in cursor order.
		for i, hr := range hooks {
			var last store.Cursor
			n := 0
			for _, call := range hr.get() {
				for _, r := range call {
					if r.Cursor <= last {
						t.Fatalf("instance %d hook: cursor %d after %d", i, r.Cursor, last)
					}
					last = r.Cursor
					n++
				}
			}
			if n != writers*commits*2 {
				t.Fatalf("instance %d hooks saw %d changes, want its own %d", i, n, writers*commits*2)
			}
		}
	}},
	{"DuplicatesAbsorbedAcrossInstances", func(t *testing.T, h *harness) {
		// The same deliveries reach several instances at once, as a
		// provider's retries reach several replicas behind a load balancer:
		// each is stored once.
		const instances, keys = 3, 20
		stores := []store.Store{h.s}
		for range instances - 1 {
			stores = append(stores, h.openAnother())
		}
		type answer struct {
			id  int64
			dup bool
		}
		answers := make([][]answer, keys)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for k := range keys {
			for _, s := range stores {
				wg.Go(func() {
					id, dup, err := s.Enqueue(context.Background(), delivery("recall", fmt.Sprintf("key_%d", k)))
					if err != nil {
						t.Errorf("Enqueue: %v", err)
						return
					}
					mu.Lock()
					answers[k] = append(answers[k], answer{id, dup})
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		for k, as := range answers {
			stored := 0
			for _, a := range as {
				if !a.dup {
					stored++
				}
				if a.id != as[0].id {
					t.Fatalf("key %d: answers %v name different deliveries", k, as)
				}
			}
			if stored != 1 {
				t.Fatalf("key %d: %d instances stored it (answers %v), want exactly 1", k, stored, as)
			}
		}
		all, err := h.s.ListDeliveries(context.Background(), store.DeliveryQuery{})
		must(t, "ListDeliveries", err)
		if len(all) != keys {
			t.Fatalf("the inbox holds %d deliveries, want %d", len(all), keys)
		}
	}},
	{"LateCommitNeverSkipped", func(t *testing.T, h *harness) {
		ctx := context.Background()
		slow, fast, reader := h.s, h.openAnother(), h.openAnother()
		mustAppend(t, fast, created(event("evt_first", "cal_a", at(0), at(time.Hour))))
		f := &follower{s: reader}
		f.poll(t)

		// The slow transaction takes its position, then waits before
		// committing.
		appended, release := make(chan store.Cursor, 1), make(chan struct{})
		slowDone := make(chan error, 1)
		go func() {
			slowDone <- slow.Update(ctx, func(tx store.Tx) error {
				cur, err := tx.AppendChange(ctx, created(event("evt_slow", "cal_a", at(0), at(time.Hour))))
				if err != nil {
					return err
				}
				appended <- cur
				<-release
				return nil
			})
		}()
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		slowCursor := <-appended
		// Meanwhile another instance commits (or tries to).
		fastDone := make(chan error, 1)
		go func() {
			_, err := appendOne(fast, "evt_fast")
			fastDone <- err
		}()
		// A reader polls while the slow transaction is open. Whatever the
		// fast writer does, the reader must not move past the slow one's
		// position before it commits.
		deadline := time.Now().Add(300 * time.Millisecond)
		fastCommitted := false
		for polls := 0; time.Now().Before(deadline) || polls < 20; polls++ {
			f.poll(t)
			if !fastCommitted {
				select {
				case err := <-fastDone:
					must(t, "the fast commit", err)
					fastCommitted = true
				default:
				}
			}
		}
		for _, r := range f.seen {
			if r.Cursor >= slowCursor {
				t.Fatalf("before the slow transaction committed, a reader saw cursor %d (the slow one holds %d)",
					r.Cursor, slowCursor)
			}
		}
		close(release)
		released = true
		must(t, "the slow commit", <-slowDone)
		if !fastCommitted {
			must(t, "the fast commit", <-fastDone)
		}
		f.poll(t)
		all := mustReadAll(t, reader, 0)
		if len(all) != 3 {
			t.Fatalf("the log holds %d changes, want 3", len(all))
		}
		checkGapFree(t, "the log", all)
		// The reader that polled throughout has every change: the late
		// commit was not skipped.
		diffRecords(t, "the polling reader", all, f.seen)
	}},
}

// appendOne commits one change of a new event through s.
func appendOne(s store.Store, id string) (store.Cursor, error) {
	ctx := context.Background()
	var cur store.Cursor
	err := s.Update(ctx, func(tx store.Tx) error {
		var err error
		cur, err = tx.AppendChange(ctx, created(event(id, "cal_a", at(0), at(time.Hour))))
		return err
	})
	return cur, err
}

func init() {
	sharedCases = append(sharedCases, testCase{"ApplyKeepsKeyOrderAcrossInstances", testSharedApplyOrder})
}

// testSharedApplyOrder: deliveries of one ordering key applied at intake
// through several instances at once apply in inbox order: the changes
// their applies append follow their delivery ids.
func testSharedApplyOrder(t *testing.T, h *harness) {
	if applyingInbox(h) == nil {
		return
	}
	const instances, perInstance = 3, 12
	stores := []store.ApplyingInbox{applyingInbox(h)}
	for range instances - 1 {
		a, ok := h.openAnother().(store.ApplyingInbox)
		if !ok {
			t.Fatal("another instance of an ApplyingInbox is not one")
		}
		stores = append(stores, a)
	}
	ctx := context.Background()
	var mu sync.Mutex
	var ids []int64
	var wg sync.WaitGroup
	for i, a := range stores {
		wg.Go(func() {
			for j := range perInstance {
				name := fmt.Sprintf("evt_%d_%d", i, j)
				var calls atomic.Int32
				res, err := a.EnqueueApply(ctx, delivery("postpress", name),
					putEventApply(event(name, "cal_a", at(time.Hour), at(2*time.Hour)), &calls))
				if err != nil {
					t.Errorf("EnqueueApply %s: %v", name, err)
					return
				}
				if res.State != done {
					t.Errorf("EnqueueApply %s: %+v, want DONE (nothing of its key is left pending)", name, res)
				}
				mu.Lock()
				ids = append(ids, res.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	recs, err := h.s.ReadChanges(ctx, 0, instances*perInstance+1)
	must(t, "ReadChanges", err)
	if len(recs) != len(ids) {
		t.Fatalf("%d changes for %d applied deliveries", len(recs), len(ids))
	}
	// Each change names its event, and each event its delivery.
	byEvent := map[string]int64{}
	for _, id := range ids {
		d := mustGetDelivery(t, h.s, id)
		byEvent[d.DedupKey] = id
	}
	var last int64
	for _, r := range recs {
		var c calsyncv1.Change
		if err := proto.Unmarshal(r.Change, &c); err != nil {
			t.Fatal(err)
		}
		id, ok := byEvent[c.GetEvent().GetId()]
		if !ok {
			t.Fatalf("change %d of unknown event %q", r.Cursor, c.GetEvent().GetId())
		}
		if id < last {
			t.Fatalf("change %d applies delivery %d after delivery %d: out of inbox order", r.Cursor, id, last)
		}
		last = id
	}
}
