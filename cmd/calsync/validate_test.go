package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// ppAllDay is a postpress all-day event starting at start (in zone, if
// given).
func ppAllDay(id, start, zone string) []byte {
	tz := ""
	if zone != "" {
		tz = fmt.Sprintf(`,"time_zone":%q`, zone)
	}
	return fmt.Appendf(nil, `{"event":"calendar_event_created","account_id":"acct","calendar_id":"owner@example.com","id":%q,
		"title":"all day %s","is_all_day":true,"start":{"date_time":%q%s}}`, id, id, start, tz)
}

// TestPoisonEventsAreDeadLettered sends all-day events whose instants,
// once moved to the starts of their dates, leave what the API's JSON can
// carry. They are dead-lettered with the reason; REST listings and REST
// watches with an initial snapshot keep working; and the earliest and
// latest days the API can carry are still accepted.
func TestPoisonEventsAreDeadLettered(t *testing.T) {
	ts := postpressServer(t)
	for _, poison := range []struct{ id, start, zone string }{
		{"last-day", "9999-12-31T00:00:00Z", ""},
		{"tokyo-first-day", "0001-01-01T12:00:00Z", "Asia/Tokyo"},
	} {
		code, body := postWebhook(t, ts, "postpress", ppAllDay(poison.id, poison.start, poison.zone), ppAuth())
		if code != http.StatusOK {
			t.Fatalf("webhook %s = %d: %s", poison.id, code, body)
		}
		d := waitForState(t, ts, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
		if !strings.Contains(d.GetLastError(), "outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z") {
			t.Errorf("%s dead-lettered with %q, which does not say why", poison.id, d.GetLastError())
		}
	}
	// The last all-day date that fits is 9999-12-30 (its exclusive end, the
	// start of the next date, must fit too); the first is 0001-01-01 in UTC.
	for _, ok := range []struct{ id, start string }{
		{"second-to-last-day", "9999-12-30T00:00:00Z"},
		{"first-day", "0001-01-01T00:00:00Z"},
	} {
		code, body := postWebhook(t, ts, "postpress", ppAllDay(ok.id, ok.start, ""), ppAuth())
		if code != http.StatusOK {
			t.Fatalf("webhook %s = %d: %s", ok.id, code, body)
		}
		waitForState(t, ts, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	}

	events := listEventsREST(t, ts.url("/v1/calendars/-/events?include_deleted=true"))
	var titles []string
	for _, e := range events.GetEvents() {
		titles = append(titles, e.GetTitle())
	}
	if got := strings.Join(titles, ", "); got != "all day first-day, all day second-to-last-day" {
		t.Fatalf("events over REST: %s", got)
	}
	if first := events.GetEvents()[0]; first.GetStartTime() == nil || !first.GetStartTime().AsTime().Equal(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the first day starts at %v, want 0001-01-01T00:00:00Z", first.GetStartTime())
	}

	// A REST watch with an initial snapshot sends every event, then the
	// snapshot_complete bookmark, then the live changes.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url("/v1/events:watch?initial_snapshot=true"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch = %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	snapshot := 0
	for sc.Scan() {
		var line struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Error != nil {
			t.Fatalf("stream line %s (%v)", sc.Bytes(), err)
		}
		var r calsyncv1.WatchEventsResponse
		if err := protojson.Unmarshal(line.Result, &r); err != nil {
			t.Fatalf("stream line %s: %v", sc.Bytes(), err)
		}
		if r.GetChange() != nil {
			snapshot++
		}
		if r.GetBookmark().GetSnapshotComplete() {
			if snapshot != 2 {
				t.Fatalf("snapshot of %d events, want 2", snapshot)
			}
			return
		}
	}
	t.Fatalf("the stream ended before the snapshot completed (%v)", sc.Err())
}
