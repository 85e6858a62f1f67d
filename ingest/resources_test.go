package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
)

// watchedStore wraps a store to see what the processor holds and writes:
// the deliveries it has read from the inbox and not yet finished, the
// order it finishes them in, and what each write transaction wrote.
type watchedStore struct {
	store.Store

	mu sync.Mutex
	// peakPage is the most body bytes one read of the inbox returned;
	// peakHeld the most that queued() and a page just read added up to.
	peakPage int
	peakHeld int64
	queued   func() int64
	keyOf    map[int64]string
	// finished lists, per ordering key, delivery ids in the order their
	// completion committed.
	finished map[string][]int64
	// puts lists, per committed Update that put events, how many it put;
	// jsonPuts counts those put with their payload's JSON.
	puts     []int
	jsonPuts int
	// syncStates counts committed PutSyncState calls.
	syncStates int
	// failUpdate, when > 0, counts Updates down; the one reaching 0 fails
	// after calling onFail, without writing.
	failUpdate int
	onFail     func()
	// check is called at every read of the inbox and every Update.
	check func()
}

func newWatchedStore(st store.Store) *watchedStore {
	return &watchedStore{Store: st, keyOf: map[int64]string{}, finished: map[string][]int64{}}
}

var errInjected = errors.New("injected write failure")

func (w *watchedStore) PendingDeliveries(ctx context.Context, afterID int64, limit int) ([]store.Delivery, error) {
	w.runCheck()
	ds, err := w.Store.PendingDeliveries(ctx, afterID, limit)
	w.mu.Lock()
	defer w.mu.Unlock()
	page := 0
	for _, d := range ds {
		page += len(d.Body)
		w.keyOf[d.ID] = d.OrderingKey
	}
	w.peakPage = max(w.peakPage, page)
	if w.queued != nil {
		// What the processor holds and the page it is about to sort.
		w.peakHeld = max(w.peakHeld, w.queued()+int64(page))
	}
	return ds, err
}

func (w *watchedStore) runCheck() {
	w.mu.Lock()
	check := w.check
	w.mu.Unlock()
	if check != nil {
		check()
	}
}

func (w *watchedStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	w.runCheck()
	w.mu.Lock()
	fail := false
	if w.failUpdate > 0 {
		w.failUpdate--
		fail = w.failUpdate == 0
	}
	onFail := w.onFail
	w.mu.Unlock()
	if fail {
		if onFail != nil {
			onFail()
		}
		return errInjected
	}
	var tx *watchedTx
	err := w.Store.Update(ctx, func(inner store.Tx) error {
		tx = &watchedTx{Tx: inner}
		return fn(tx)
	})
	if err != nil || tx == nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range tx.finished {
		w.finished[w.keyOf[id]] = append(w.finished[w.keyOf[id]], id)
	}
	if tx.puts > 0 {
		w.puts = append(w.puts, tx.puts)
	}
	w.jsonPuts += tx.jsonPuts
	w.syncStates += tx.syncStates
	return nil
}

type watchedTx struct {
	store.Tx
	puts, jsonPuts, syncStates int
	finished                   []int64
}

func (tx *watchedTx) PutEvent(ctx context.Context, e *calsyncv1.CalendarEvent) error {
	tx.puts++
	return tx.Tx.PutEvent(ctx, e)
}

func (tx *watchedTx) PutEventRawJSON(ctx context.Context, e *calsyncv1.CalendarEvent, raw model.RawJSON) error {
	tx.puts++
	tx.jsonPuts++
	return tx.Tx.PutEventRawJSON(ctx, e, raw)
}

func (tx *watchedTx) PutSyncState(ctx context.Context, s store.SyncState) error {
	tx.syncStates++
	return tx.Tx.PutSyncState(ctx, s)
}

func (tx *watchedTx) FinishDelivery(ctx context.Context, id int64, state calsyncv1.DeliveryState, note string) error {
	tx.finished = append(tx.finished, id)
	return tx.Tx.FinishDelivery(ctx, id, state, note)
}

// largePostpressBody is a postpress event of a little over size bytes on
// the calendar owner<cal>@example.com.
func largePostpressBody(cal, n, size int) []byte {
	return fmt.Appendf(nil, `{"event":"calendar_event_created","webhook_name":"w","account_id":"acct","id":"evt-%d-%d","calendar_id":"owner%d@example.com",
		"created_at":"2026-01-16T16:00:00Z","updated_at":"2026-01-16T16:00:00Z","title":"event %d","body":%q,
		"is_cancelled":false,"is_all_day":false,"attendees":[],
		"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Europe/Paris"},
		"end":{"date_time":"2026-01-20T15:30:00+01:00","time_zone":"Europe/Paris"}}`, cal, n, cal, n, strings.Repeat("b", size))
}

// TestProcessingQueueBoundedInBytes: many large deliveries wait in the
// inbox. The processor never holds more of them than its byte bound, nor
// reads more at once, yet processes every one, each calendar's in inbox
// order, and reads what did not fit as soon as room comes back: the
// periodic rescan is an hour away.
func TestProcessingQueueBoundedInBytes(t *testing.T) {
	const (
		bodySize   = 32 << 10
		maxBody    = bodySize + 4<<10
		bound      = 10 * (maxBody + deliveryOverhead)
		calendars  = 3
		deliveries = 45
	)
	st := newWatchedStore(mustOpenStore(t))
	p := newPipelineOn(t, st, nil, func(c *ProcessorConfig) {
		c.MaxQueuedBytes, c.MaxDeliveryBytes, c.RescanInterval = bound, maxBody, time.Hour
	})
	st.queued = p.proc.QueuedBytes
	var overBound []int64
	st.check = func() {
		if n := p.proc.QueuedBytes(); n > bound {
			st.mu.Lock()
			overBound = append(overBound, n)
			st.mu.Unlock()
		}
	}
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	for i := range deliveries {
		body := largePostpressBody(i%calendars, i, bodySize)
		if _, err := p.recv.Receive(context.Background(), model.ProviderPostpress, body, h); err != nil {
			t.Fatal(err)
		}
	}
	p.start(t)
	p.drain(t)

	st.mu.Lock()
	defer st.mu.Unlock()
	t.Logf("bound %d bytes: largest read of the inbox %d bytes, most held with a page just read %d bytes (%d deliveries, %d bytes in all)",
		bound, st.peakPage, st.peakHeld, deliveries, deliveries*bodySize)
	if st.peakPage > bound {
		t.Errorf("one read of the inbox returned %d bytes of deliveries; the bound is %d", st.peakPage, bound)
	}
	if st.peakHeld > bound {
		t.Errorf("the processor held %d bytes of deliveries with a page just read; the bound is %d", st.peakHeld, bound)
	}
	if len(overBound) > 0 {
		t.Errorf("QueuedBytes exceeded the bound %d: %v", bound, overBound)
	}
	total := 0
	for key, ids := range st.finished {
		total += len(ids)
		if !slices.IsSorted(ids) {
			t.Errorf("calendar %s: deliveries finished in the order %v, not in inbox order", key, ids)
		}
	}
	if total != deliveries {
		t.Errorf("%d deliveries finished, want %d", total, deliveries)
	}
	evs, err := p.st.ListEvents(context.Background(), store.EventQuery{})
	if err != nil || len(evs) != deliveries {
		t.Fatalf("the store holds %d events (%v), want %d", len(evs), err, deliveries)
	}
}

// TestRecallStallDoesNotHoldPostpress: Recall stops answering, with more
// calendars waiting on it than there are workers, and more hints than the
// processing queue holds. Postpress deliveries received after them all are
// processed all the same, while every Recall request is still held.
func TestRecallStallDoesNotHoldPostpress(t *testing.T) {
	fake := recalltest.New(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the fake closes
	fake.Inject(recalltest.Fault{Count: 1000, Block: release})
	var recallCalendars []string
	for range 8 {
		recallCalendars = append(recallCalendars, fake.PutCalendar(recalltest.Calendar{}).ID)
	}
	// Ten deliveries of the largest size fill the queue; hints are a few
	// hundred bytes, so hundreds of them overflow it.
	const maxBody, bound = 1 << 10, 10 * (1<<10 + deliveryOverhead)
	p := newPipeline(t, fake, func(c *ProcessorConfig) {
		c.Workers, c.RemoteWorkers = 4, 2
		c.MaxDeliveryBytes, c.MaxQueuedBytes, c.RescanInterval = maxBody, bound, time.Hour
	})
	for i := range 400 {
		p.sendHint(t, recallCalendars[i%len(recallCalendars)], fmt.Sprint("msg_stall_", i))
	}
	p.start(t)
	waitFor(t, "Recall-bound workers to be stalled", func() bool { return fake.InFlight() >= 2 })
	if n := p.proc.Pending(); n >= 400 {
		t.Fatalf("the processor holds all %d Recall hints; the test needs more than its queue holds", n)
	}

	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	const postpress = 50
	for i := range postpress {
		body := ppVersion(fmt.Sprintf("evt%d", i), 0, false)
		if _, err := p.recv.Receive(context.Background(), model.ProviderPostpress, body, h); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "postpress deliveries to be processed", func() bool {
		ds, err := p.st.ListDeliveries(context.Background(), store.DeliveryQuery{Provider: model.ProviderPostpress, State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE})
		return err == nil && len(ds) == postpress
	})
	if n := fake.InFlight(); n == 0 {
		t.Fatal("no Recall request in flight once postpress was done: the test did not stall Recall")
	}
	if fake.Requests("") != 0 {
		t.Fatalf("Recall answered %d requests while it was stalled", fake.Requests(""))
	}
	if n := p.proc.QueuedBytes(); n > bound {
		t.Errorf("the processor holds %d bytes of deliveries; the bound is %d", n, bound)
	}

	// Once Recall answers, every hint is worked through.
	close(release)
	release = make(chan struct{}) // for the cleanup
	p.drain(t)
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkMatchesRecall requires the store to hold exactly the fake's events
// of one calendar: same titles, deleted ones as tombstones.
func checkMatchesRecall(t *testing.T, st store.Store, fake *recalltest.Server, recallCalendarID string) {
	t.Helper()
	want := fake.Events(recallCalendarID)
	calID := model.CalendarID(model.ProviderRecall, "", recallCalendarID)
	held, err := st.ListEvents(context.Background(), store.EventQuery{CalendarID: calID, IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != len(want) {
		t.Errorf("the store holds %d events of the calendar, Recall %d", len(held), len(want))
	}
	for _, e := range want {
		ev, err := st.GetEvent(context.Background(), model.EventID(model.ProviderRecall, "", e.ID), false)
		if err != nil {
			t.Errorf("event %s: %v", e.ID, err)
			continue
		}
		if ev.GetTitle() != e.Raw["summary"] || ev.GetDeleted() != e.IsDeleted {
			t.Errorf("event %s: stored title %q deleted %v, Recall has %q deleted %v", e.ID, ev.GetTitle(), ev.GetDeleted(), e.Raw["summary"], e.IsDeleted)
		}
	}
}

// TestFullResyncIsPaged: a calendar of several pages is resynced a page per
// transaction, converges to Recall's state (updates, deletes, new events),
// and advances its sync state only once the whole listing is in: a resync
// that fails midway leaves the sync state as it was and converges on retry.
func TestFullResyncIsPaged(t *testing.T) {
	const pageSize = 10
	ctx := context.Background()
	fake := recalltest.New(t, recalltest.WithPageSize(pageSize))
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	var ids []string
	for i := range 35 {
		b := recalltest.Google(fmt.Sprint("g", i)).Summary(fmt.Sprint("event ", i)).Timed(start, start.Add(time.Hour), "UTC")
		ids = append(ids, fake.PutEvent(b.Event(cal.ID)).ID)
	}
	for _, id := range ids[:3] {
		fake.DeleteEvent(id)
	}
	st := newWatchedStore(mustOpenStore(t))
	p := newPipelineOn(t, st, fake, func(*ProcessorConfig) {})
	p.start(t)
	p.sendHint(t, cal.ID, "msg_first")
	p.drain(t)
	checkMatchesRecall(t, p.st, fake, cal.ID)

	// Recall changes: updates, deletes, new events. A full resync brings
	// them all in, a page per transaction.
	for _, id := range ids[5:10] {
		fake.UpdateEvent(id, func(e *recalltest.Event) { e.Raw["summary"] = "renamed " + e.ID })
	}
	for _, id := range ids[20:22] {
		fake.DeleteEvent(id)
	}
	for i := range 4 {
		b := recalltest.Google(fmt.Sprint("new", i)).Summary(fmt.Sprint("new ", i)).Timed(start, start.Add(time.Hour), "UTC")
		fake.PutEvent(b.Event(cal.ID))
	}
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
	before, err := p.st.GetSyncState(ctx, calID)
	if err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.puts, st.jsonPuts, st.syncStates = nil, 0, 0
	st.mu.Unlock()
	if _, err := p.proc.RequestResync(ctx, calID); err != nil {
		t.Fatal(err)
	}
	p.drain(t)
	checkMatchesRecall(t, p.st, fake, cal.ID)
	st.mu.Lock()
	puts, jsonPuts, syncStates := slices.Clone(st.puts), st.jsonPuts, st.syncStates
	st.mu.Unlock()
	if len(puts) < 4 || slices.Max(puts) > pageSize {
		t.Errorf("events put per transaction: %v; want each page (of %d) in its own transaction", puts, pageSize)
	}
	// The payload of every event put, tombstones included, is kept as the
	// JSON Recall sent.
	if all := sum(puts); jsonPuts != all {
		t.Errorf("%d of %d events put with their payload's JSON; want all", jsonPuts, all)
	}
	if syncStates != 1 {
		t.Errorf("the sync state was written %d times, want once, with the last page", syncStates)
	}
	after, err := p.st.GetSyncState(ctx, calID)
	if err != nil || !after.LastFullSync.After(before.LastFullSync) {
		t.Errorf("last full sync %v → %v (%v); want it advanced", before.LastFullSync, after.LastFullSync, err)
	}

	// A resync whose second page fails to commit: the first page is in,
	// the sync state has not moved, and the retry converges.
	for _, id := range ids[25:30] {
		fake.UpdateEvent(id, func(e *recalltest.Event) { e.Raw["summary"] = "again " + e.ID })
	}
	var failedWith store.SyncState
	st.mu.Lock()
	st.puts, st.syncStates = nil, 0
	st.failUpdate = 2
	st.onFail = func() {
		failedWith, _ = p.st.GetSyncState(ctx, calID)
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.puts) != 1 {
			t.Errorf("when the second page failed, %d pages had committed, want 1", len(st.puts))
		}
	}
	st.mu.Unlock()
	if _, err := p.proc.RequestResync(ctx, calID); err != nil {
		t.Fatal(err)
	}
	p.drain(t)
	if !failedWith.LastFullSync.Equal(after.LastFullSync) || !failedWith.Watermark.Equal(after.Watermark) {
		t.Errorf("sync state when the resync failed midway = %+v, want it unchanged from %+v", failedWith, after)
	}
	checkMatchesRecall(t, p.st, fake, cal.ID)
	final, err := p.st.GetSyncState(ctx, calID)
	if err != nil || !final.LastFullSync.After(after.LastFullSync) {
		t.Errorf("after the retried resync, last full sync %v → %v (%v); want it advanced", after.LastFullSync, final.LastFullSync, err)
	}
}

func sum(xs []int) (n int) {
	for _, x := range xs {
		n += x
	}
	return n
}
