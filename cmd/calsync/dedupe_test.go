package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// testClock is a clock a test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// postpressBody is the testdata event as event (created or updated) at
// version updated.
func postpressBody(t *testing.T, event string, updated time.Time) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readTestdata(t, "postpress_created.json"), &m); err != nil {
		t.Fatal(err)
	}
	m["event"], m["updated_at"] = event, updated.UTC().Format(time.RFC3339Nano)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A postpress delete carries no timestamp, so deleting an event, restoring
// it and deleting it again sends the same bytes twice. Past the dedupe
// window the second delete is a new delivery, and the event ends deleted;
// within the window a copy is still a duplicate.
func TestPostpressDeleteRestoreDelete(t *testing.T) { onBackends(t, testPostpressDeleteRestoreDelete) }

func testPostpressDeleteRestoreDelete(t *testing.T, be backend) {
	start := time.Now().UTC().Truncate(time.Second)
	clock := &testClock{now: start}
	ts := postpressServer(t, be.use(t), func(c *serveConfig) {
		c.dedupeWindow, c.deliveryRetention = time.Minute, time.Hour
		c.now = clock.Now
	})
	deleted := []byte(`{"event":"calendar_event_deleted","webhook_name":"CALENDAR_EVENTS_WEBHOOK","account_id":"a4qFy0liRAGo-oZ2YFpirQ","calendar_id":"owner@example.com","id":"5m8lnvb64dt2uuaq99k4685eeq"}`)

	send := func(at time.Time, body []byte, wantDuplicate bool) ingestAnswer {
		t.Helper()
		clock.set(at)
		code, b := postWebhook(t, ts, "postpress", body, ppAuth())
		if code != http.StatusOK {
			t.Fatalf("webhook = %d: %s", code, b)
		}
		a := decodeAnswer(t, b)
		if a.Duplicate != wantDuplicate {
			t.Fatalf("webhook at +%v answered duplicate=%v, want %v", at.Sub(start), a.Duplicate, wantDuplicate)
		}
		if !a.Duplicate {
			waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		}
		return a
	}
	isDeleted := func() bool {
		t.Helper()
		resp, err := calsyncv1.NewCalendarServiceClient(ts.conn).ListEvents(context.Background(),
			&calsyncv1.ListEventsRequest{CalendarId: "-", IncludeDeleted: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) != 1 {
			t.Fatalf("events = %v, want the one event", resp.GetEvents())
		}
		return resp.GetEvents()[0].GetDeleted()
	}

	send(start, postpressBody(t, "calendar_event_created", start.Add(-time.Hour)), false)
	first := send(start.Add(time.Second), deleted, false)
	if !isDeleted() {
		t.Fatal("the event is not deleted after the first delete")
	}
	send(start.Add(2*time.Minute), postpressBody(t, "calendar_event_updated", start.Add(2*time.Minute)), false)
	if isDeleted() {
		t.Fatal("the event is still deleted after its restore")
	}
	second := send(start.Add(10*time.Minute), deleted, false)
	if second.DeliveryID == first.DeliveryID {
		t.Fatalf("the second delete reused delivery %s", first.DeliveryID)
	}
	if !isDeleted() {
		t.Fatal("the second delete of the same bytes was not applied")
	}
	// The provider retrying the second delete within the window is a copy.
	if again := send(start.Add(10*time.Minute+30*time.Second), deleted, true); again.DeliveryID != second.DeliveryID {
		t.Fatalf("retry answered delivery %s, want %s", again.DeliveryID, second.DeliveryID)
	}
}

// A retention shorter than the dedupe window would let pruned deliveries
// be taken again for new ones: serve refuses it.
func TestDeliveryRetentionAtLeastDedupeWindow(t *testing.T) {
	for _, c := range []struct{ window, retention time.Duration }{
		{time.Hour, time.Minute},
		{0, time.Hour},
	} {
		cfg := defaultTestConfig(t)
		cfg.dedupeWindow, cfg.deliveryRetention = c.window, c.retention
		var logs bytes.Buffer
		err := serve(context.Background(), cfg, &logs)
		var usage usageError
		if !errors.As(err, &usage) {
			t.Errorf("window %v, retention %v: serve = %v, want a usage error", c.window, c.retention, err)
		}
	}
}

// A provider's text is bounded where calsync keeps or logs it: a 500 KB
// time zone that makes a delivery dead leaves a reason of at most 1 KiB,
// and no log line carries it whole.
func TestDeadLetterReasonBounded(t *testing.T) {
	ts := postpressServer(t)
	var m map[string]any
	if err := json.Unmarshal(readTestdata(t, "postpress_created.json"), &m); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("Z", 500_000)
	m["start"].(map[string]any)["time_zone"] = huge
	m["end"].(map[string]any)["time_zone"] = huge
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	code, b := postWebhook(t, ts, "postpress", body, ppAuth())
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, b)
	}
	d := waitForState(t, ts, decodeAnswer(t, b).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	if n := len(d.GetLastError()); n > store.MaxNoteBytes || !strings.Contains(d.GetLastError(), "truncated") {
		t.Fatalf("dead-letter reason of %d bytes: %.200q", n, d.GetLastError())
	}
	for _, line := range strings.Split(ts.logs.String(), "\n") {
		if len(line) > 8<<10 {
			t.Fatalf("a log line of %d bytes: %.200s", len(line), line)
		}
	}
}

// The server prunes finished deliveries once they are older than
// --delivery-retention, and counts them in metrics.
func TestServerPrunesInbox(t *testing.T) { onBackends(t, testServerPrunesInbox) }

func testServerPrunesInbox(t *testing.T, be backend) {
	start := time.Now().UTC()
	clock := &testClock{now: start}
	ts := postpressServer(t, be.use(t), func(c *serveConfig) {
		c.dedupeWindow, c.deliveryRetention = time.Minute, time.Hour
		c.now, c.pruneInterval = clock.Now, 10*time.Millisecond
	})
	code, b := postWebhook(t, ts, "postpress", readTestdata(t, "postpress_created.json"), ppAuth())
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, b)
	}
	waitForState(t, ts, decodeAnswer(t, b).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	const prunedDone = `calsync_inbox_deliveries_pruned_total{state="done"}`
	if got := scrape(t, ts.url("/metrics"), "")[prunedDone]; got != 0 {
		t.Fatalf("%s = %v within the retention", prunedDone, got)
	}
	clock.set(start.Add(2 * time.Hour))
	eventually(t, "the finished delivery to be pruned", func() bool {
		return len(listDeliveries(t, ts)) == 0 && scrape(t, ts.url("/metrics"), "")[prunedDone] == 1
	})
}
