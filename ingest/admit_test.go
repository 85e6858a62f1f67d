package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
)

// waitDead waits until n deliveries are dead-lettered and returns them.
func (p *pipeline) waitDead(t *testing.T, n int) []store.Delivery {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ds, err := p.st.ListDeliveries(context.Background(), store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_DEAD})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) >= n {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries dead-lettered, want %d", len(ds), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestFarFutureUpdatedAtIsDeadLettered: a postpress version stamped two
// days ahead is refused with its reason, so the later update and the
// delete that follow still apply instead of looking older than it.
func TestFarFutureUpdatedAtIsDeadLettered(t *testing.T) {
	p := mustPipeline(t, nil)
	ctx := context.Background()
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	send := func(body []byte) {
		t.Helper()
		if _, err := p.recv.Receive(ctx, model.ProviderPostpress, body, h); err != nil {
			t.Fatal(err)
		}
	}
	send(ppVersion("e1", 0, false))
	p.drain(t)

	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	send(fmt.Appendf(nil, `{"event":"calendar_event_updated","account_id":"acct","id":"e1","calendar_id":"owner@example.com",
		"updated_at":%q,"title":"from the future",
		"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Europe/Paris"}}`, future))
	dead := p.waitDead(t, 1)
	if reason := dead[0].LastError; !strings.Contains(reason, "updated_at "+future) || !strings.Contains(reason, "ahead") {
		t.Errorf("dead-letter reason %q does not name the future updated_at", reason)
	}

	evID := model.EventID(model.ProviderPostpress, model.PostpressScope("acct", "owner@example.com"), "e1")
	wantState := func(title string, deleted bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			held, err := p.st.GetEvent(ctx, evID, false)
			if err != nil {
				t.Fatal(err)
			}
			if held.GetTitle() == title && held.GetDeleted() == deleted {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("store holds %q deleted=%v, want %q deleted=%v", held.GetTitle(), held.GetDeleted(), title, deleted)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	send(ppVersion("e1", 1, false))
	wantState("version 1", false)
	send(ppVersion("e1", 2, true))
	wantState("version 1", true)
}

// TestRecallFarFutureEventIsSkipped: a Recall event stamped three days
// ahead is left out of the sync, which still completes for the calendar's
// other events and leaves the watermark alone; once Recall describes the
// event sanely, the next incremental sync takes it.
func TestRecallFarFutureEventIsSkipped(t *testing.T) {
	fake := recalltest.New(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour).Truncate(time.Second)
	fake.SetNow(time.Now().Add(72 * time.Hour))
	bad := fake.PutEvent(recalltest.Google("g1").Summary("from the future").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	fake.SetNow(time.Now())
	good := fake.PutEvent(recalltest.Google("g2").Summary("sane").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))

	p := mustPipeline(t, fake)
	p.sendHint(t, cal.ID, "msg_1")
	p.drain(t) // done, not dead
	ctx := context.Background()
	if _, err := p.st.GetEvent(ctx, model.EventID(model.ProviderRecall, "", good.ID), false); err != nil {
		t.Fatalf("the sane event: %v", err)
	}
	if _, err := p.st.GetEvent(ctx, model.EventID(model.ProviderRecall, "", bad.ID), false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the event from the future was stored (%v)", err)
	}
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
	if st, err := p.st.GetSyncState(ctx, calID); err != nil || st.Watermark.After(time.Now().Add(time.Hour)) {
		t.Fatalf("watermark %v (%v) moved to the future", st.Watermark, err)
	}

	fake.SetNow(time.Now())
	fake.UpdateEvent(bad.ID, func(e *recalltest.Event) { e.Raw["summary"] = "fixed" })
	p.sendHint(t, cal.ID, "msg_2")
	p.drain(t)
	held, err := p.st.GetEvent(ctx, model.EventID(model.ProviderRecall, "", bad.ID), false)
	if err != nil || held.GetTitle() != "fixed" {
		t.Fatalf("after Recall fixed it: %v, %v", held, err)
	}
}
