package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
)

// These tests run several processors, each over its own store instance,
// on one PostgreSQL database: replicas of calsync, in one test binary.

// replicaPipeline is one replica's pipeline, with what it processed and
// a way to stop it.
type replicaPipeline struct {
	*pipeline
	// done counts the deliveries this replica's processor finished.
	done atomic.Int64
	stop func()
}

// openReplicaStores opens n store instances on one fresh database.
func openReplicaStores(t *testing.T, n int) []*postgres.DB {
	t.Helper()
	url := pgtest.NewDatabase(t)
	var dbs []*postgres.DB
	for range n {
		db, err := postgres.Open(context.Background(), url, postgres.Options{TempDir: t.TempDir(), MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// newReplica builds a replica's pipeline over st, named owner, claiming
// with ttl and polling every 20 ms; it does not start it.
func newReplica(t *testing.T, st store.Store, fake *recalltest.Server, owner string, ttl time.Duration) *replicaPipeline {
	t.Helper()
	r := &replicaPipeline{}
	r.pipeline = newPipelineOn(t, st, fake, func(c *ProcessorConfig) {
		c.Owner, c.ClaimTTL, c.ClaimPollInterval = owner, ttl, 20*time.Millisecond
		c.OnProcessed = func(_, outcome string, n int, _ time.Duration) {
			if outcome == "done" {
				r.done.Add(int64(n))
			}
		}
	})
	r.stop = func() {}
	return r
}

// run starts the replica's processor; stop cancels it (without any
// cleanup of its claims, as a killed process) and waits for it.
func (r *replicaPipeline) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.proc.Run(ctx); close(done) }()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(r.stop)
}

// drainReplicas waits until the shared inbox holds nothing pending and no
// replica holds a delivery in memory.
func drainReplicas(t *testing.T, rs ...*replicaPipeline) {
	t.Helper()
	waitFor(t, "the shared inbox to be drained", func() bool {
		s, err := rs[0].st.InboxStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Dead != 0 {
			t.Fatalf("%d deliveries were dead-lettered", s.Dead)
		}
		for _, r := range rs {
			if r.proc.Pending() != 0 {
				return false
			}
		}
		return s.Pending == 0
	})
}

// ppCalendarVersion is version n of postpress event eventID of calendar
// calendar.
func ppCalendarVersion(calendar, eventID string, n int) []byte {
	updated := time.Date(2026, 1, 16, 16, 0, n, 0, time.UTC).Format(time.RFC3339)
	return fmt.Appendf(nil, `{"event":"calendar_event_updated","webhook_name":"w","account_id":"acct","id":%q,"calendar_id":%q,
		"created_at":"2026-01-16T16:00:00Z","updated_at":%q,"title":"version %d","is_cancelled":false,"is_all_day":false,"attendees":[],
		"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Europe/Paris"},
		"end":{"date_time":"2026-01-20T15:30:00+01:00","time_zone":"Europe/Paris"}}`, eventID, calendar, updated, n)
}

// enqueuePending stores a postpress delivery PENDING, as one received
// behind an earlier delivery of its calendar is, for processing to apply.
func enqueuePending(t *testing.T, st store.Store, body []byte) {
	t.Helper()
	w, err := postpress.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Enqueue(context.Background(), store.NewDelivery{Provider: model.ProviderPostpress,
		DedupKey: postpress.DedupKey(body), EventType: w.Event, OrderingKey: w.CalendarID(), Body: body}); err != nil {
		t.Fatal(err)
	}
}

// countDone is how many deliveries are DONE in the shared inbox.
func countDone(t *testing.T, st store.Store) int {
	t.Helper()
	ds, err := st.ListDeliveries(context.Background(), store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE})
	if err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

// TestClaimsProcessEachDeliveryOnce: three replicas work through postpress
// deliveries and Recall hints stored through all of them while they run.
// Every delivery is processed by exactly one replica, and each calendar's
// versions apply in order: each version makes one change.
func TestClaimsProcessEachDeliveryOnce(t *testing.T) {
	fake := recalltest.New(t)
	dbs := openReplicaStores(t, 3)
	var rs []*replicaPipeline
	for i, db := range dbs {
		r := newReplica(t, db, fake, fmt.Sprint("replica-", i), DefaultClaimTTL)
		r.run(t)
		rs = append(rs, r)
	}
	var recallCalendars []string
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour)
	for c := range 3 {
		cal := fake.PutCalendar(recalltest.Calendar{})
		recallCalendars = append(recallCalendars, cal.ID)
		for e := range 2 {
			fake.PutEvent(recalltest.Google(fmt.Sprintf("g%d-%d", c, e)).Summary("meeting").
				Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
		}
	}

	const calendars, versions = 6, 8
	var wg sync.WaitGroup
	for c := range calendars {
		wg.Go(func() {
			// One calendar's versions are stored in order, each through
			// another replica.
			for n := range versions {
				r := rs[(c+n)%len(rs)]
				enqueuePending(t, r.st, ppCalendarVersion(fmt.Sprint("cal", c, "@example.com"), fmt.Sprint("evt", c), n))
				r.proc.Notify()
			}
		})
	}
	for i, cal := range recallCalendars {
		wg.Go(func() {
			for h := range 3 {
				rs[(i+h)%len(rs)].sendHint(t, cal, fmt.Sprintf("msg_%d_%d", i, h))
			}
		})
	}
	wg.Wait()
	drainReplicas(t, rs...)

	total := calendars*versions + len(recallCalendars)*3
	var processed int64
	for i, r := range rs {
		t.Logf("replica %d processed %d deliveries", i, r.done.Load())
		processed += r.done.Load()
	}
	if processed != int64(total) {
		t.Errorf("the replicas processed %d deliveries together, want each of the %d once", processed, total)
	}
	if n := countDone(t, rs[0].st); n != total {
		t.Errorf("%d deliveries DONE, want %d", n, total)
	}
	log := changesByEvent(t, rs[0].st)
	for c := range calendars {
		id := model.EventID(model.ProviderPostpress, model.PostpressScope("acct", fmt.Sprint("cal", c, "@example.com")), fmt.Sprint("evt", c))
		if n := checkLog(t, rs[0].st, id, log[id]); n != versions {
			t.Errorf("%s: %d changes for %d versions applied in order", id, n, versions)
		}
	}
	for c, cal := range recallCalendars {
		checkMatchesRecall(t, rs[0].st, fake, cal)
		for e := range 2 {
			id := model.EventID(model.ProviderRecall, "", fake.Events(cal)[e].ID)
			if n := checkLog(t, rs[0].st, id, log[id]); n != 1 {
				t.Errorf("calendar %d: %s has %d changes, want 1", c, id, n)
			}
		}
	}
}

// TestClaimsCoalesceHintsAcrossReplicas: hints for one calendar received
// by three replicas cause one fetch of its events, not one per replica.
func TestClaimsCoalesceHintsAcrossReplicas(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	dbs := openReplicaStores(t, 3)
	var rs []*replicaPipeline
	for i, db := range dbs {
		rs = append(rs, newReplica(t, db, fake, fmt.Sprint("replica-", i), DefaultClaimTTL))
	}
	// The hints arrive, spread over the replicas, while every worker is
	// busy elsewhere (here: not started yet).
	const hints = 9
	for i := range hints {
		rs[i%len(rs)].sendHint(t, cal.ID, fmt.Sprint("msg_", i))
	}
	for _, r := range rs {
		r.run(t)
	}
	drainReplicas(t, rs...)
	if n := fake.Requests(recalltest.EndpointEventList); n != 1 {
		t.Errorf("%d event list requests for %d hints spread over %d replicas, want 1", n, hints, len(rs))
	}
	if n := countDone(t, rs[0].st); n != hints {
		t.Errorf("%d deliveries DONE, want %d", n, hints)
	}
}

// TestClaimsTakenOverFromAStoppedProcessor: a processor stops in the
// middle of a Recall fetch, releasing nothing (as a killed replica could
// not): its deliveries stay PENDING and its claim held until it expires;
// then another replica finishes them.
func TestClaimsTakenOverFromAStoppedProcessor(t *testing.T) {
	const ttl = 3 * time.Second
	fake := recalltest.New(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) }) // before the fake closes
	fake.Inject(recalltest.Fault{Endpoint: recalltest.EndpointEventList, Count: 1, Block: block})
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	dbs := openReplicaStores(t, 2)
	killed := &stallingStore{DB: dbs[0]}
	a := newReplica(t, killed, fake, "replica-a", ttl)
	b := newReplica(t, dbs[1], fake, "replica-b", ttl)

	a.run(t)
	const hints = 3
	for i := range hints {
		a.sendHint(t, cal.ID, fmt.Sprint("msg_", i))
	}
	waitFor(t, "replica A's event list to be held", func() bool { return fake.InFlightOn(recalltest.EndpointEventList) == 1 })
	// A killed process reaches the database no more: not even to give
	// its claims back.
	killed.stalled.Store(true)
	a.stop()
	// A left its work as a killed process would: PENDING, still claimed.
	claims, err := dbs[1].ClaimPending(context.Background(), "probe", ttl, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claims {
		dbs[1].ReleaseLease(context.Background(), c.Lease)
	}
	if len(claims) != 0 {
		t.Fatalf("the stopped processor released its claim: %+v", claims)
	}
	if s, err := dbs[1].InboxStats(context.Background()); err != nil || s.Pending != hints {
		t.Fatalf("inbox after the stop: %+v, %v; want %d pending", s, err, hints)
	}

	stopped := time.Now()
	b.run(t)
	drainReplicas(t, b) // a stopped processor keeps what it held in memory
	t.Logf("replica B finished A's deliveries %v after A stopped (claim TTL %v)", time.Since(stopped), ttl)
	if got := b.done.Load(); got != hints {
		t.Errorf("replica B processed %d deliveries, want A's %d", got, hints)
	}
	if n := countDone(t, dbs[1]); n != hints {
		t.Errorf("%d deliveries DONE, want %d", n, hints)
	}
	checkMatchesRecall(t, dbs[1], fake, cal.ID)
}

// stallingStore is a replica's store that can stall as a paused process
// (SIGSTOP) does: while stalled, it neither renews its claims nor claims
// new keys. It counts the writes refused for a lost claim.
type stallingStore struct {
	*postgres.DB
	stalled atomic.Bool
	refused atomic.Int64
	// writes, if set, holds every Update back until it is closed: a
	// process paused in the middle of its work.
	writes chan struct{}
}

var errStalled = fmt.Errorf("stalled: %w", store.ErrUnavailable)

func (s *stallingStore) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if s.stalled.Load() {
		return store.Lease{}, errStalled
	}
	return s.DB.RenewLease(ctx, l, ttl)
}

func (s *stallingStore) ReleaseLease(ctx context.Context, l store.Lease) error {
	if s.stalled.Load() {
		return errStalled
	}
	return s.DB.ReleaseLease(ctx, l)
}

func (s *stallingStore) ClaimPending(ctx context.Context, owner string, ttl time.Duration, limit int) ([]store.Claim, error) {
	if s.stalled.Load() {
		return nil, errStalled
	}
	return s.DB.ClaimPending(ctx, owner, ttl, limit)
}

func (s *stallingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.writes != nil {
		select {
		case <-s.writes:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := s.DB.Update(ctx, fn)
	if errors.Is(err, store.ErrLeaseLost) {
		s.refused.Add(1)
	}
	return err
}

// TestClaimsFenceOffAStalledProcessor: replica A stalls in the middle of
// a Recall fetch and its claim expires; replica B takes the calendar over
// and processes its hints. When A wakes up with its fetch's answer, its
// write is refused: nothing is applied or finished twice.
func TestClaimsFenceOffAStalledProcessor(t *testing.T) {
	const ttl = time.Second
	fake := recalltest.New(t)
	block := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(block) })
	t.Cleanup(unblock) // before the fake closes
	fake.Inject(recalltest.Fault{Endpoint: recalltest.EndpointEventList, Count: 1, Block: block})
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	ev := fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	dbs := openReplicaStores(t, 2)
	stalling := &stallingStore{DB: dbs[0]}
	a := newReplica(t, stalling, fake, "replica-a", ttl)
	b := newReplica(t, dbs[1], fake, "replica-b", ttl)

	a.run(t)
	const hints = 2
	for i := range hints {
		a.sendHint(t, cal.ID, fmt.Sprint("msg_", i))
	}
	waitFor(t, "replica A's event list to be held", func() bool { return fake.InFlightOn(recalltest.EndpointEventList) == 1 })
	stalling.stalled.Store(true)

	b.run(t)
	waitFor(t, "replica B to take the calendar over and finish its hints", func() bool { return countDone(t, dbs[1]) == hints })
	// B reports a batch done just after the transaction that finished it
	// commits; A, stalled, can report nothing.
	waitFor(t, "replica B to report the hints done", func() bool { return b.done.Load() == hints })

	// A wakes up with its answer: its write must be refused.
	unblock()
	waitFor(t, "replica A to be done with the calendar", func() bool { return a.proc.Pending() == 0 })
	if got := a.done.Load(); got != 0 {
		t.Errorf("replica A finished %d deliveries after losing its claim", got)
	}
	if stalling.refused.Load() == 0 {
		t.Error("replica A's write was not refused")
	}
	id := model.EventID(model.ProviderRecall, "", ev.ID)
	if n := checkLog(t, dbs[1], id, changesByEvent(t, dbs[1])[id]); n != 1 {
		t.Errorf("%s has %d changes, want 1", id, n)
	}
	ds, err := dbs[1].ListDeliveries(context.Background(), store.DeliveryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE || d.Attempts != 0 {
			t.Errorf("delivery %d: %v after %d failed attempts, want DONE at the first", d.ID, d.State, d.Attempts)
		}
	}
}

// TestClaimsRetryReleasesTheKey: a delivery that fails has its attempt
// recorded and its calendar released, not held in memory while it waits:
// its retry, when due, is claimed afresh (by any replica) and succeeds.
func TestClaimsRetryReleasesTheKey(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	dbs := openReplicaStores(t, 2)
	var rs []*replicaPipeline
	for i, db := range dbs {
		r := newReplica(t, db, fake, fmt.Sprint("replica-", i), DefaultClaimTTL)
		// The client gives up at once, and the processor's retry waits a
		// second, long enough to look at the replicas meanwhile.
		r.proc.cfg.Recall = recall.NewClient(fake.URL, fake.APIKey(), recall.WithBackoff(time.Millisecond, time.Millisecond, time.Millisecond))
		r.proc.cfg.RetryBase, r.proc.cfg.RetryMax = time.Second, time.Second
		rs = append(rs, r)
	}
	fake.FailNext(1, http.StatusServiceUnavailable)
	for _, r := range rs {
		r.run(t)
	}
	rs[0].sendHint(t, cal.ID, "msg_retry")
	waitFor(t, "the failed attempt to be recorded", func() bool {
		ds, err := dbs[0].ListDeliveries(context.Background(), store.DeliveryQuery{})
		return err == nil && len(ds) == 1 && ds[0].Attempts == 1
	})
	recorded := time.Now()
	// Waiting for its retry (due 0.8 s to 1.2 s after it failed), the
	// delivery is in no replica's memory. The worker that failed it counts
	// it until it has released the claim, a moment after the attempt is
	// recorded; it must let go long before the retry is due.
	for a, b := rs[0].proc.Pending(), rs[1].proc.Pending(); a+b != 0; a, b = rs[0].proc.Pending(), rs[1].proc.Pending() {
		if time.Since(recorded) > 500*time.Millisecond {
			t.Fatalf("replicas hold %d and %d deliveries while the only one waits for its retry", a, b)
		}
		time.Sleep(time.Millisecond)
	}
	drainReplicas(t, rs...)
	ds, err := dbs[0].ListDeliveries(context.Background(), store.DeliveryQuery{})
	if err != nil || len(ds) != 1 || ds[0].State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE || ds[0].Attempts != 1 {
		t.Fatalf("deliveries = %+v, %v; want one DONE after one failed attempt", ds, err)
	}
	if got := rs[0].done.Load() + rs[1].done.Load(); got != 1 {
		t.Errorf("the replicas processed the delivery %d times, want once", got)
	}
}

// TestClaimsLostAtRenewalDropsQueuedDeliveries: replica A stalls while
// writing the first of a calendar's deliveries, with the rest queued
// behind it, and replica B takes the calendar over and processes them
// all. When A's renewal finds the claim lost, A drops the queued
// deliveries from memory at once; the one it was writing is refused when
// A gets to write it.
func TestClaimsLostAtRenewalDropsQueuedDeliveries(t *testing.T) {
	const ttl = time.Second
	dbs := openReplicaStores(t, 2)
	stalling := &stallingStore{DB: dbs[0], writes: make(chan struct{})}
	release := sync.OnceFunc(func() { close(stalling.writes) })
	t.Cleanup(release)
	a := newReplica(t, stalling, nil, "replica-a", ttl)
	b := newReplica(t, dbs[1], nil, "replica-b", ttl)
	const versions = 5
	for n := range versions {
		enqueuePending(t, dbs[0], ppCalendarVersion("cal@example.com", "evt", n))
	}
	a.run(t)
	waitFor(t, "replica A to hold the calendar's deliveries", func() bool { return a.proc.Pending() == versions })
	stalling.stalled.Store(true)
	b.run(t)
	waitFor(t, "replica B to process the calendar", func() bool { return b.done.Load() == versions })

	stalling.stalled.Store(false) // A's next renewal finds the claim lost
	waitFor(t, "replica A to drop the queued deliveries", func() bool { return a.proc.Pending() == 1 })
	release()
	waitFor(t, "replica A to drop the delivery it was writing", func() bool { return a.proc.Pending() == 0 })
	if got := a.done.Load(); got != 0 {
		t.Errorf("replica A finished %d deliveries after losing its claim", got)
	}
	if stalling.refused.Load() != 1 {
		t.Errorf("%d of replica A's writes refused, want the one it was making", stalling.refused.Load())
	}
	id := model.EventID(model.ProviderPostpress, model.PostpressScope("acct", "cal@example.com"), "evt")
	if n := checkLog(t, dbs[1], id, changesByEvent(t, dbs[1])[id]); n != versions {
		t.Errorf("%s has %d changes, want %d", id, n, versions)
	}
}

// TestClaimsKeyLargerThanTheQueue: one calendar holds more deliveries
// than the processing queue: its claim is worked through a part at a time,
// in order, each version making its change, and nothing is left behind.
func TestClaimsKeyLargerThanTheQueue(t *testing.T) {
	dbs := openReplicaStores(t, 2)
	var rs []*replicaPipeline
	for i, db := range dbs {
		r := newReplica(t, db, nil, fmt.Sprint("replica-", i), DefaultClaimTTL)
		// A lane holds three of these deliveries (about 500 bytes each),
		// so the calendar's are read a few at a time.
		r.proc.sched = newScheduler(maxQueued, 2*3*600, laneOf, r.proc.Notify)
		rs = append(rs, r)
	}
	const versions = 30
	for n := range versions {
		body := ppCalendarVersion("big@example.com", "evt", n)
		if size := len(body) + len(postpress.DedupKey(body)); size < 400 || size > 600 {
			t.Fatalf("a delivery takes %d bytes; the test needs about 500", size)
		}
		enqueuePending(t, dbs[n%2], body)
	}
	for _, r := range rs {
		r.run(t)
	}
	drainReplicas(t, rs...)
	if got := rs[0].done.Load() + rs[1].done.Load(); got != versions {
		t.Errorf("the replicas processed %d deliveries, want %d", got, versions)
	}
	id := model.EventID(model.ProviderPostpress, model.PostpressScope("acct", "big@example.com"), "evt")
	if n := checkLog(t, dbs[0], id, changesByEvent(t, dbs[0])[id]); n != versions {
		t.Errorf("%s has %d changes, want %d, one per version in order", id, n, versions)
	}
}

// TestClaimsReleasedOnShutdown: a processor stopped cleanly (a rolling
// deploy, a node drain) gives its claims back once its workers have
// returned, so another replica takes its calendars over at once rather
// than after the claim TTL.
func TestClaimsReleasedOnShutdown(t *testing.T) {
	const ttl = time.Hour // far longer than the test: only a release frees the key
	fake := recalltest.New(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) }) // before the fake closes
	fake.Inject(recalltest.Fault{Endpoint: recalltest.EndpointEventList, Count: 1, Block: block})
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	dbs := openReplicaStores(t, 2)
	a := newReplica(t, dbs[0], fake, "replica-a", ttl)
	b := newReplica(t, dbs[1], fake, "replica-b", ttl)

	a.run(t)
	const hints = 2
	for i := range hints {
		a.sendHint(t, cal.ID, fmt.Sprint("msg_", i))
	}
	waitFor(t, "replica A's event list to be held", func() bool { return fake.InFlightOn(recalltest.EndpointEventList) == 1 })
	a.stop()
	b.run(t)
	drainReplicas(t, b)
	if got := b.done.Load(); got != hints {
		t.Errorf("replica B processed %d deliveries, want A's %d", got, hints)
	}
	if n := countDone(t, dbs[1]); n != hints {
		t.Errorf("%d deliveries DONE, want %d", n, hints)
	}
	checkMatchesRecall(t, dbs[1], fake, cal.ID)
}
