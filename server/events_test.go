package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// listREST GETs /v1/calendars/-/events with q and decodes the answer.
func listREST(t *testing.T, ts *testServer, q url.Values) *calsyncv1.ListEventsResponse {
	t.Helper()
	resp, err := http.Get("http://" + ts.srv.HTTPAddr() + "/v1/calendars/-/events?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET events?%s = %d: %s", q.Encode(), resp.StatusCode, body)
	}
	var out calsyncv1.ListEventsResponse
	if err := protojson.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return &out
}

// TestListEventsPagesThroughYear9999 pages over REST through events at the
// far ends of what the model holds, a page at a time: every event comes
// once, in (start_time, id) order, and range filters there select exactly.
func TestListEventsPagesThroughYear9999(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	ctx := context.Background()
	lastDay := time.Date(9999, time.December, 31, 0, 0, 0, 0, time.UTC)
	var want []string
	var events []*calsyncv1.CalendarEvent
	// Ids sort against time, so an order that loses the instants shows.
	for i := range 7 {
		start := lastDay.Add(time.Duration(i) * time.Hour)
		id := fmt.Sprintf("evt_%c_9999", 'g'-i)
		want = append(want, id)
		events = append(events, &calsyncv1.CalendarEvent{Id: id, CalendarId: "cal_a", Provider: "postpress",
			StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(30 * time.Minute))})
	}
	year1 := &calsyncv1.CalendarEvent{Id: "evt_z_year1", CalendarId: "cal_a", Provider: "postpress",
		StartTime: timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)),
		EndTime:   timestamppb.New(time.Date(1, 1, 1, 1, 0, 0, 0, time.UTC))}
	events = append(events, year1)
	want = append([]string{year1.GetId()}, want...)
	if err := ts.st.Update(ctx, func(tx store.Tx) error {
		for _, e := range events {
			if err := tx.PutEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	page := func(q url.Values) []string {
		t.Helper()
		var got []string
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("paging does not end: %v", got)
			}
			resp := listREST(t, ts, q)
			for _, e := range resp.GetEvents() {
				got = append(got, e.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return got
			}
			q.Set("page_token", resp.GetNextPageToken())
		}
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
	check("every event, two a page", page(url.Values{"page_size": {"2"}}), want)
	check("the last day, one a page", page(url.Values{"page_size": {"1"},
		"start_time": {"9999-12-31T02:00:00Z"}, "end_time": {"9999-12-31T23:59:59.999999999Z"}}), want[3:])
	check("year 1", page(url.Values{"end_time": {"0001-01-01T00:00:01Z"}}), want[:1])
	check("before the earliest instant", page(url.Values{"end_time": {"0001-01-01T00:00:00Z"}}), nil)
}
