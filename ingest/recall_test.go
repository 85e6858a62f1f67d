package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
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
