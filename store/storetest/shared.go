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
			DiffRecords(t, fmt.Sprintf("follower on instance %d", i), all, f.seen)
		}
		// Each instance's hooks saw what the backend promises, in cursor
		// order: every instance's commits, or its own.
		for i, hr := range hooks {
			if reportsEveryInstance(stores[i]) {
				DiffRecords(t, fmt.Sprintf("hooks of instance %d", i), all, flat(hr.wait(t, len(all))))
				continue
			}
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
		DiffRecords(t, "the polling reader", all, f.seen)
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
	sharedCases = append(sharedCases,
		testCase{"ApplyKeepsKeyOrderAcrossInstances", testSharedApplyOrder},
		testCase{"OnCommitReportsEveryInstance", testSharedOnCommit})
}

// reportsEveryInstance reports whether s's commit hooks report the commits
// of every instance on its database rather than its own (see
// [store.ChangeLog.OnCommit]): a backend on a database server, which
// several processes share, does; one embedded in its process (SQLite)
// does not. A [store.Pinger] is such a server's store.
func reportsEveryInstance(s store.Store) bool {
	_, ok := s.(store.Pinger)
	return ok
}

// testSharedOnCommit: three instances commit at once (Updates appending
// one or two changes, and deliveries applied at intake where the backend
// can), and a fourth only watches. On a backend several processes share,
// every instance's hooks, the watcher's included, see the one complete
// order of everything committed: the same records, each once, gap-free.
// On an embedded backend each instance's hooks see exactly its own
// commits, in order, and the watcher's see nothing.
func testSharedOnCommit(t *testing.T, h *harness) {
	const writers, goroutines, commits = 3, 2, 8
	stores := []store.Store{h.s}
	for range writers {
		stores = append(stores, h.openAnother())
	}
	watcher := stores[writers]
	hooks := make([]*hookRecorder, len(stores))
	for i, s := range stores {
		hooks[i] = recordHooks(s)
	}
	ctx := context.Background()
	var mu sync.Mutex
	own := make([]map[store.Cursor]bool, writers)
	var wg sync.WaitGroup
	for i := range writers {
		own[i] = map[store.Cursor]bool{}
		s := stores[i]
		for g := range goroutines {
			wg.Go(func() {
				for c := range commits {
					name := fmt.Sprintf("evt_%d_%d_%d", i, g, c)
					e := event(name, "cal_"+name, at(0), at(time.Hour))
					if a, ok := s.(store.ApplyingInbox); ok && c%2 == 1 {
						var calls atomic.Int32
						res, err := a.EnqueueApply(ctx, delivery("postpress", name), putEventApply(e, &calls))
						if err != nil || res.State != done {
							t.Errorf("EnqueueApply %s = %+v, %v; want DONE", name, res, err)
						}
						continue
					}
					changes := []*calsyncv1.Change{created(e)}
					if c%3 == 0 {
						changes = append(changes, created(e))
					}
					cursors := mustAppend(t, s, changes...)
					mu.Lock()
					for _, cur := range cursors {
						own[i][cur] = true
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	all := mustReadAll(t, h.s, 0)
	checkGapFree(t, "the log", all)
	if len(all) < writers*goroutines*commits {
		t.Fatalf("the log holds %d changes, want at least %d", len(all), writers*goroutines*commits)
	}
	if !reportsEveryInstance(h.s) {
		// Changes applied at intake are an instance's own too: find them
		// by the event names the applies used.
		for _, r := range all {
			var c calsyncv1.Change
			if err := proto.Unmarshal(r.Change, &c); err != nil {
				t.Fatal(err)
			}
			var i int
			if _, err := fmt.Sscanf(c.GetEvent().GetId(), "evt_%d_", &i); err != nil {
				t.Fatalf("change %d of unexpected event %q", r.Cursor, c.GetEvent().GetId())
			}
			own[i][r.Cursor] = true
		}
		for i := range writers {
			var want []store.ChangeRecord
			for _, r := range all {
				if own[i][r.Cursor] {
					want = append(want, r)
				}
			}
			DiffRecords(t, fmt.Sprintf("hooks of instance %d (its own commits)", i), want, flat(hooks[i].get()))
		}
		if got := flat(hooks[writers].get()); len(got) != 0 {
			t.Fatalf("the hooks of an instance that never committed saw %d changes", len(got))
		}
		return
	}
	for i, hr := range hooks {
		what := fmt.Sprintf("hooks of instance %d", i)
		if stores[i] == watcher {
			what = "hooks of the instance that never commits"
		}
		got := flat(hr.wait(t, len(all)))
		checkGapFree(t, what, got)
		DiffRecords(t, what, all, got)
	}
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
