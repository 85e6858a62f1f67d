package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
)

// sendHint delivers a signed calendar.sync_events hint for a Recall
// calendar with a fresh message id.
func (p *pipeline) sendHint(t testing.TB, recallCalendarID, msgID string) {
	t.Helper()
	wh, _ := svix.NewWebhook(testRecallSecret)
	body := fmt.Appendf(nil, `{"event":"calendar.sync_events","data":{"calendar_id":%q,"last_updated_ts":"2026-01-01T00:00:00Z"}}`, recallCalendarID)
	ts := time.Now()
	sig, _ := wh.Sign(msgID, ts, body)
	h := http.Header{}
	h.Set("webhook-id", msgID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	if _, err := p.recv.Receive(context.Background(), model.ProviderRecall, body, h); err != nil {
		t.Fatal(err)
	}
}

func TestRecallHintsCoalesce(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	p := newPipeline(t, fake, func(*ProcessorConfig) {})
	// Twenty hints for one calendar arrive while the workers are busy
	// elsewhere (here: not started yet).
	for i := range 20 {
		p.sendHint(t, cal.ID, fmt.Sprint("msg_", i))
	}
	p.start(t)
	p.drain(t)
	if n := fake.Requests(recalltest.EndpointEventList); n != 1 {
		t.Errorf("%d event list requests for 20 coalesced hints, want 1", n)
	}
	ds, err := p.st.ListDeliveries(context.Background(), store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE})
	if err != nil || len(ds) != 20 {
		t.Errorf("%d deliveries done, want 20 (%v)", len(ds), err)
	}
}

// gatedLimiter is a shared rate limiter that holds every event list
// request until the test lets it through, and reports each one waiting.
type gatedLimiter struct {
	waiting chan struct{}
	pass    chan struct{}
}

func (g *gatedLimiter) TakeToken(ctx context.Context, name string, _ time.Duration, _ int) (time.Duration, error) {
	if !strings.Contains(name, recall.EndpointEventList) {
		return 0, nil
	}
	select {
	case g.waiting <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-g.pass:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// next waits until a listing waits on g, failing the test after 10 s.
func (g *gatedLimiter) next(t *testing.T) {
	t.Helper()
	select {
	case <-g.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("no event list request waits for its turn")
	}
}

// waitHeld waits until p's processor holds n deliveries, queued or in
// flight.
func (p *pipeline) waitHeld(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); p.proc.Pending() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("processor holds %d deliveries, want %d", p.proc.Pending(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// eventLists returns the URLs of the event list requests fake answered
// since its last reset.
func eventLists(fake *recalltest.Server) []string {
	var lists []string
	for _, r := range fake.RequestLog() {
		if r.Endpoint == recall.EndpointEventList {
			lists = append(lists, r.URL)
		}
	}
	return lists
}

// TestRecallHintsJoinAFetchWaitingForItsTurn: hints for a calendar whose
// fetch waits on Recall's rate limit are answered by that fetch, since it
// starts after they arrived; a full resync requested meanwhile is not (an
// incremental listing cannot answer it) and gets a listing of its own.
func TestRecallHintsJoinAFetchWaitingForItsTurn(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	ev := fake.PutEvent(recalltest.Google("g1").Summary("one").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	gate := &gatedLimiter{waiting: make(chan struct{}), pass: make(chan struct{})}
	p := newPipeline(t, fake, func(c *ProcessorConfig) {
		c.Recall = recall.NewClient(fake.URL, fake.APIKey(),
			recall.WithRateLimit(recall.EndpointEventList, 60, 1), recall.WithSharedRateLimiter(gate))
	})
	p.start(t)
	ctx := context.Background()
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
	done := func() int {
		t.Helper()
		ds, err := p.st.ListDeliveries(ctx, store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE})
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}

	// A first sync sets the calendar's watermark.
	p.sendHint(t, cal.ID, "msg_first")
	gate.next(t)
	gate.pass <- struct{}{}
	p.drain(t)

	// Five hints arrive while the next fetch waits: one listing answers
	// all six.
	fake.UpdateEvent(ev.ID, func(e *recalltest.Event) { e.Raw["summary"] = "two" })
	fake.ResetRequests()
	p.sendHint(t, cal.ID, "msg_a")
	gate.next(t)
	for i := range 5 {
		p.sendHint(t, cal.ID, fmt.Sprint("msg_b", i))
	}
	p.waitHeld(t, 6)
	gate.pass <- struct{}{}
	p.drain(t)
	if lists := eventLists(fake); len(lists) != 1 || !strings.Contains(lists[0], "updated_at__gte") {
		t.Errorf("event list requests for six hints: %q, want one incremental listing", lists)
	}
	if n := done(); n != 7 {
		t.Errorf("%d deliveries done, want 7", n)
	}
	held, err := p.st.GetEvent(ctx, model.EventID(model.ProviderRecall, "", ev.ID), false)
	if err != nil || held.GetTitle() != "two" {
		t.Errorf("event after the sync: %v, %v", held, err)
	}

	// A resync requested while a hint's fetch waits is not answered by it.
	fake.ResetRequests()
	p.sendHint(t, cal.ID, "msg_c")
	gate.next(t)
	if _, err := p.proc.RequestResync(ctx, calID); err != nil {
		t.Fatal(err)
	}
	p.waitHeld(t, 2)
	gate.pass <- struct{}{}
	gate.next(t) // the resync's own listing
	gate.pass <- struct{}{}
	p.drain(t)
	if lists := eventLists(fake); len(lists) != 2 || !strings.Contains(lists[0], "updated_at__gte") || strings.Contains(lists[1], "updated_at__gte") {
		t.Errorf("event list requests for a hint and a resync: %q, want an incremental listing, then a full one", lists)
	}
	if n := done(); n != 9 {
		t.Errorf("%d deliveries done, want 9", n)
	}
}

// TestRecallHintsOfSeveralCalendarsShareOneListing: the fetches of
// several calendars that wait for Recall's rate limit together go out as
// one listing of the workspace, and each calendar still gets its own
// events and its deliveries done.
func TestRecallHintsOfSeveralCalendarsShareOneListing(t *testing.T) {
	fake := recalltest.New(t)
	start := time.Now().Add(time.Hour)
	var cals []recalltest.Calendar
	var evs []recalltest.Event
	for i := range 3 {
		cal := fake.PutCalendar(recalltest.Calendar{})
		cals = append(cals, cal)
		evs = append(evs, fake.PutEvent(recalltest.Google(fmt.Sprint("g", i)).Summary("one").
			Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID)))
	}
	gate := &gatedLimiter{waiting: make(chan struct{}), pass: make(chan struct{})}
	client := recall.NewClient(fake.URL, fake.APIKey(),
		recall.WithRateLimit(recall.EndpointEventList, 60, 1), recall.WithSharedRateLimiter(gate))
	p := newPipeline(t, fake, func(c *ProcessorConfig) { c.Recall = client })
	p.start(t)

	// A first sync of each calendar, one at a time, sets its watermark
	// (full listings are never merged).
	for i, cal := range cals {
		p.sendHint(t, cal.ID, fmt.Sprint("msg_first", i))
		gate.next(t)
		gate.pass <- struct{}{}
		p.drain(t)
	}

	// Each calendar changes, and its hint arrives while the first
	// calendar's fetch waits for its turn: one listing answers all three.
	for i := range cals {
		fake.UpdateEvent(evs[i].ID, func(e *recalltest.Event) { e.Raw["summary"] = fmt.Sprint("two ", i) })
	}
	fake.ResetRequests()
	for i, cal := range cals {
		p.sendHint(t, cal.ID, fmt.Sprint("msg_next", i))
	}
	gate.next(t)
	for deadline := time.Now().Add(10 * time.Second); client.WaitingListings() < len(cals); {
		if time.Now().After(deadline) {
			t.Fatalf("%d listings wait together, want %d", client.WaitingListings(), len(cals))
		}
		time.Sleep(time.Millisecond)
	}
	gate.pass <- struct{}{}
	p.drain(t) // a listing not merged would wait at the gate for ever
	if lists := eventLists(fake); len(lists) != 1 || strings.Contains(lists[0], "calendar_id") || !strings.Contains(lists[0], "updated_at__gte") {
		t.Errorf("event list requests for three calendars' hints: %q, want one incremental listing of the workspace", lists)
	}
	ctx := context.Background()
	for i := range cals {
		got, err := p.st.GetEvent(ctx, model.EventID(model.ProviderRecall, "", evs[i].ID), false)
		if want := fmt.Sprint("two ", i); err != nil || got.GetTitle() != want {
			t.Errorf("calendar %d's event after the sync: %q, %v; want %q", i, got.GetTitle(), err, want)
		}
	}
	ds, err := p.st.ListDeliveries(ctx, store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE})
	if err != nil || len(ds) != 2*len(cals) {
		t.Errorf("%d deliveries done, want %d (%v)", len(ds), 2*len(cals), err)
	}
}

// TestRecallReconciliationCatchesDroppedHints: no webhook ever arrives for
// a change, and the periodic reconciliation still brings it in.
func TestRecallReconciliationCatchesDroppedHints(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour)
	ev := fake.PutEvent(recalltest.Google("g1").Summary("before").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	p := newPipeline(t, fake, func(c *ProcessorConfig) { c.ResyncInterval = 100 * time.Millisecond })
	p.start(t)
	p.sendHint(t, cal.ID, "msg_first")
	p.drain(t)

	fake.UpdateEvent(ev.ID, func(e *recalltest.Event) { e.Raw["summary"] = "after" })
	id := model.EventID(model.ProviderRecall, "", ev.ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		held, err := p.st.GetEvent(context.Background(), id, false)
		if err == nil && held.GetTitle() == "after" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconciliation did not pick up the change: %v %v", held, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRecallOutageIsRetriedNotDeadLettered: Recall answers 503 for a while;
// the delivery is retried with backoff and ends done.
func TestRecallOutageIsRetriedNotDeadLettered(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	p := newPipeline(t, fake, func(*ProcessorConfig) {})
	// The client's own retries give up quickly, so the processor's retries
	// are exercised too.
	p.proc.cfg.Recall = recall.NewClient(fake.URL, fake.APIKey(), recall.WithBackoff(time.Millisecond, 2*time.Millisecond, 5*time.Millisecond))
	fake.FailNext(12, http.StatusServiceUnavailable)
	p.start(t)
	p.sendHint(t, cal.ID, "msg_outage")
	p.drain(t)
	ds, err := p.st.ListDeliveries(context.Background(), store.DeliveryQuery{})
	if err != nil || len(ds) != 1 || ds[0].State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE || ds[0].Attempts == 0 {
		t.Fatalf("deliveries = %+v, %v; want one DONE after retries", ds, err)
	}
}
