package recalltest_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/calsync/calsync/provider/recall/recalltest"
)

func get(t *testing.T, srv *recalltest.Server, path, auth string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestServer(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithNow(time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)))
	cal := srv.PutCalendar(recalltest.Calendar{Platform: "microsoft_outlook"})
	e1 := srv.PutEvent(recalltest.Microsoft("m1").Subject("One").
		Timed(time.Date(2026, 1, 21, 9, 0, 0, 0, time.UTC), time.Date(2026, 1, 21, 10, 0, 0, 0, time.UTC), "UTC").Event(cal.ID))
	srv.Advance(time.Minute)
	srv.PutEvent(recalltest.Google("g1").Summary("Two").AllDay("2026-01-22", "2026-01-23").Event(cal.ID))
	srv.Advance(time.Minute)
	deleted := srv.DeleteEvent(e1.ID)
	if !deleted.IsDeleted || !deleted.UpdatedAt.Equal(time.Date(2026, 1, 20, 8, 2, 0, 0, time.UTC)) || deleted.PlatformID != "m1" {
		t.Fatalf("DeleteEvent = %+v", deleted)
	}

	t.Run("Unauthorized", func(t *testing.T) {
		if code, _ := get(t, srv, "/api/v2/calendars/"+cal.ID+"/", ""); code != http.StatusUnauthorized {
			t.Fatalf("status %d", code)
		}
		if code, _ := get(t, srv, "/api/v2/calendars/"+cal.ID+"/", "Token nope"); code != http.StatusUnauthorized {
			t.Fatalf("status %d", code)
		}
	})
	t.Run("BareKeyAccepted", func(t *testing.T) {
		if code, body := get(t, srv, "/api/v2/calendars/"+cal.ID+"/", srv.APIKey()); code != http.StatusOK || body["id"] != cal.ID {
			t.Fatalf("status %d body %v", code, body)
		}
	})
	t.Run("Filters", func(t *testing.T) {
		auth := "Token " + srv.APIKey()
		for query, want := range map[string]int{
			"?calendar_id=" + cal.ID:                                      2,
			"?calendar_id=other":                                          0,
			"?updated_at__gte=2026-01-20T08:01:00Z":                       2,
			"?updated_at__gte=2026-01-20T08:02:00Z":                       1,
			"?is_deleted=false":                                           1,
			"?ical_uid=040000008200E00074C5B7101A82E008m1":                1,
			"?start_time__gte=2026-01-21T12:00:00Z&calendar_id=" + cal.ID: 1,
		} {
			code, body := get(t, srv, "/api/v2/calendar-events/"+query, auth)
			if code != http.StatusOK || len(body["results"].([]any)) != want {
				t.Errorf("%s: status %d, %d results, want %d", query, code, len(body["results"].([]any)), want)
			}
		}
		if code, _ := get(t, srv, "/api/v2/calendar-events/?updated_at__gte=soon", auth); code != http.StatusBadRequest {
			t.Errorf("bad filter: status %d", code)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		if code, _ := get(t, srv, "/api/v2/calendar-events/nope/", "Token "+srv.APIKey()); code != http.StatusNotFound {
			t.Fatalf("status %d", code)
		}
	})
	t.Run("FaultsTargetEndpoint", func(t *testing.T) {
		srv.Inject(recalltest.Fault{Endpoint: recalltest.EndpointEventList, Count: 1, Status: 503})
		if code, _ := get(t, srv, "/api/v2/calendars/"+cal.ID+"/", "Token "+srv.APIKey()); code != http.StatusOK {
			t.Fatalf("calendar status %d", code)
		}
		if code, _ := get(t, srv, "/api/v2/calendar-events/", "Token "+srv.APIKey()); code != http.StatusServiceUnavailable {
			t.Fatalf("list status %d", code)
		}
	})
}
