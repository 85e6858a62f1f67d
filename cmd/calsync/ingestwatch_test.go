package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
)

// ppWebhook is version n of postpress event id in calendar cal.
func ppWebhook(cal, id string, n int) []byte {
	return fmt.Appendf(nil, `{"event":"calendar_event_updated","webhook_name":"w","account_id":"acct","id":%q,
		"calendar_id":%q,"updated_at":"2026-02-01T10:%02d:%02dZ","title":"%s v%d","is_all_day":false,
		"start":{"date_time":"2026-02-10T09:00:00+01:00","time_zone":"Europe/Paris"},
		"end":{"date_time":"2026-02-10T10:00:00+01:00","time_zone":"Europe/Paris"}}`, id, cal, n/60, n%60, id, n)
}

// collect reads a stream until it has been idle for a bookmark interval
// after at least want changes, and returns the cursors of its changes.
func collect(t *testing.T, stream calsyncv1.CalendarService_WatchEventsClient, want int) ([]string, []*calsyncv1.Change) {
	t.Helper()
	var cursors []string
	var changes []*calsyncv1.Change
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Errorf("stream ended after %d changes: %v", len(changes), err)
			return cursors, changes
		}
		if c := resp.GetChange(); c != nil {
			cursors = append(cursors, c.GetCursor())
			changes = append(changes, c)
			continue
		}
		if len(changes) >= want {
			return cursors, changes // a bookmark after the expected changes: idle
		}
	}
}

// TestWatchUnderConcurrentIngestion sends postpress webhooks from several
// connections at once while filtered and unfiltered watchers stream; each
// watcher must see exactly its part of the change log, in order, with no
// gap and no duplicate.
func TestWatchUnderConcurrentIngestion(t *testing.T) {
	onBackends(t, testWatchUnderConcurrentIngestion)
}

func testWatchUnderConcurrentIngestion(t *testing.T, be backend) {
	ts := postpressServer(t, be.use(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := calsyncv1.NewCalendarServiceClient(ts.conn)
	calendars := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	filtered := model.CalendarID(model.ProviderPostpress, "acct", calendars[0])

	open := func(req *calsyncv1.WatchEventsRequest) (calsyncv1.CalendarService_WatchEventsClient, string) {
		req.BookmarkInterval = durationpb.New(time.Second)
		stream, err := client.WatchEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv() // every stream starts with a bookmark
		if err != nil || first.GetBookmark() == nil {
			t.Fatalf("first response %v, %v", first, err)
		}
		return stream, first.GetBookmark().GetCursor()
	}
	var all, one []calsyncv1.CalendarService_WatchEventsClient
	var start string
	for range 6 {
		s, c := open(&calsyncv1.WatchEventsRequest{})
		all, start = append(all, s), c
	}
	for range 6 {
		s, _ := open(&calsyncv1.WatchEventsRequest{CalendarIds: []string{filtered}})
		one = append(one, s)
	}

	const senders, perSender = 8, 40
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range perSender {
				cal := calendars[(s+i)%len(calendars)]
				// Each sender owns its events, so every webhook is a new
				// version and makes exactly one change.
				body := ppWebhook(cal, fmt.Sprintf("s%d-e%d", s, i%10), i)
				code, resp := postWebhook(t, ts, "postpress", body, http.Header{"Postpress-Auth": {postpressSecret}})
				if code != http.StatusOK {
					t.Errorf("webhook = %d: %s", code, resp)
				}
			}
		})
	}
	wg.Wait()
	// One change per webhook, and one CALENDAR_UPDATED per new calendar.
	total := senders*perSender + len(calendars)

	// The change log itself, replayed from where the watchers started.
	ref, _ := open(&calsyncv1.WatchEventsRequest{AfterCursor: start})
	logCursors, logChanges := collect(t, ref, total)
	if len(logCursors) != total {
		t.Fatalf("the change log has %d changes, want %d", len(logCursors), total)
	}
	var wantOne []string
	for i, c := range logChanges {
		if c.GetEvent().GetCalendarId() == filtered || c.GetCalendar().GetId() == filtered {
			wantOne = append(wantOne, logCursors[i])
		}
	}
	var check sync.WaitGroup
	for i, s := range append(all, one...) {
		want := logCursors
		if i >= len(all) {
			want = wantOne
		}
		check.Go(func() {
			got, _ := collect(t, s, len(want))
			if !slices.Equal(got, want) {
				t.Errorf("stream %d: %d changes, want %d in change-log order", i, len(got), len(want))
			}
		})
	}
	check.Wait()
}
