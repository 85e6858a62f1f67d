package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// Two Svix secrets, as during a rotation; deliveries may be signed with either.
const (
	recallSecretOld = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	recallSecret    = "whsec_plJ3nmyCDGBKInavdOK15jsl"
)

var msgSeq atomic.Int64

// recallSigned returns Svix headers signing body with secret at ts, in the
// "svix" or "webhook" (Standard Webhooks) header set.
func recallSigned(t *testing.T, set, secret string, ts time.Time, body []byte) http.Header {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("msg_test%d", msgSeq.Add(1))
	sig, err := wh.Sign(id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(set+"-id", id)
	h.Set(set+"-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set(set+"-signature", sig)
	return h
}

func syncEventsBody(calendarID string) []byte {
	return []byte(fmt.Sprintf(`{"event": "calendar.sync_events", "data": {"calendar_id": %q, "last_updated_ts": %q}}`,
		calendarID, time.Now().UTC().Format(time.RFC3339)))
}

// recallServer is calsync wired to a fake Recall API.
func recallServer(t *testing.T, mutate ...func(*serveConfig)) (*testServer, *recalltest.Server) {
	t.Helper()
	fake := recalltest.New(t)
	cfg := defaultTestConfig(t)
	for _, m := range mutate {
		m(&cfg)
	}
	cfg.recallWebhookSecrets = recallSecretOld + "," + recallSecret
	cfg.recallAPIURL = fake.URL
	cfg.recallAPIKey = fake.APIKey()
	return mustServe(t, cfg), fake
}

func TestRecallWebhooks(t *testing.T) { onBackends(t, testRecallWebhooks) }

func testRecallWebhooks(t *testing.T, be backend) {
	ts, fake := recallServer(t, be.use(t))
	cal := fake.PutCalendar(recalltest.Calendar{
		PlatformEmail: "owner@example.com", OAuthClientSecret: "oauth-client-secret-value", OAuthRefreshToken: "oauth-refresh-token-value",
	})
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour).UTC()
	standup := fake.PutEvent(recalltest.Google("g1").Summary("Standup").Timed(start, start.Add(30*time.Minute), "Europe/Paris").
		Meet("https://meet.google.com/abc-defg-hij").Event(cal.ID))
	fake.PutEvent(recalltest.Microsoft("m1").Subject("Review").Timed(start.Add(2*time.Hour), start.Add(3*time.Hour), "Pacific Standard Time").
		Teams("https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0").Event(cal.ID))

	post := func(t *testing.T, body []byte, h http.Header) ingestAnswer {
		t.Helper()
		code, resp := postWebhook(t, ts, "recall", body, h)
		if code != http.StatusOK {
			t.Fatalf("= %d: %s", code, resp)
		}
		return decodeAnswer(t, resp)
	}

	t.Run("SyncEventsFetchesCalendarAndEvents", func(t *testing.T) {
		body := syncEventsBody(cal.ID)
		a := post(t, body, recallSigned(t, "svix", recallSecret, time.Now(), body))
		waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		events := listEventsREST(t, ts.url("/v1/calendars/"+calID+"/events"))
		if len(events.GetEvents()) != 2 {
			t.Fatalf("events = %v", events)
		}
		meet, teams := events.GetEvents()[0], events.GetEvents()[1]
		if meet.GetTitle() != "Standup" || meet.GetMeetingPlatform() != "google_meet" || meet.GetTimeZone() != "Europe/Paris" {
			t.Errorf("google event = %v", meet)
		}
		if teams.GetTitle() != "Review" || teams.GetMeetingPlatform() != "microsoft_teams" || teams.GetTimeZone() != "America/Los_Angeles" {
			t.Errorf("microsoft event = %v", teams)
		}
		var c calsyncv1.GetCalendarResponse
		getProto(t, ts.url("/v1/calendars/"+calID), &c)
		if c.GetCalendar().GetEmail() != "owner@example.com" || c.GetCalendar().GetStatus() != calsyncv1.CalendarStatus_CALENDAR_STATUS_CONNECTED {
			t.Errorf("calendar = %v", c.GetCalendar())
		}
	})

	t.Run("StandardWebhooksHeadersAndOldSecret", func(t *testing.T) {
		fake.UpdateEvent(standup.ID, func(e *recalltest.Event) { e.Raw["summary"] = "Standup (moved)" })
		body := syncEventsBody(cal.ID)
		a := post(t, body, recallSigned(t, "webhook", recallSecretOld, time.Now(), body))
		waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		ev := listEventsREST(t, ts.url("/v1/calendars/"+calID+"/events")).GetEvents()[0]
		if ev.GetTitle() != "Standup (moved)" {
			t.Errorf("title = %q", ev.GetTitle())
		}
	})

	t.Run("SeveralSignaturesInOneHeader", func(t *testing.T) {
		body := syncEventsBody(cal.ID)
		h := recallSigned(t, "svix", recallSecret, time.Now(), body)
		h.Set("svix-signature", "v1,bm90IGEgc2lnbmF0dXJl "+h.Get("svix-signature")+" v2,ignored")
		post(t, body, h)
	})

	t.Run("ExactBytesAreVerified", func(t *testing.T) {
		// Odd whitespace, no Content-Type, and a body that is not JSON: the
		// signature covers the bytes as sent, so any rewrite would fail it.
		for _, body := range [][]byte{
			[]byte("  {\"event\":\t\"calendar.sync_events\" ,\n \"data\": {\"calendar_id\": \"" + cal.ID + "\"}}\r\n\n"),
			[]byte("\x00\x01 not json at all \xff"),
		} {
			a := post(t, body, recallSigned(t, "svix", recallSecret, time.Now(), body))
			if strings.Contains(string(body), "not json") {
				d := waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
				if d.GetLastError() == "" {
					t.Errorf("dead letter without reason")
				}
			}
		}
	})

	t.Run("CalendarUpdateStoresStatusNeverSecrets", func(t *testing.T) {
		fake.SetCalendarStatus(cal.ID, "disconnected", map[string]any{"error": "invalid_grant"})
		body := []byte(fmt.Sprintf(`{"event": "calendar.update", "data": {"calendar_id": %q}}`, cal.ID))
		a := post(t, body, recallSigned(t, "svix", recallSecret, time.Now(), body))
		waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		code, raw := httpDo(t, http.MethodGet, ts.url("/v1/calendars/"+calID), nil, nil)
		if code != http.StatusOK || !strings.Contains(string(raw), "CALENDAR_STATUS_DISCONNECTED") || !strings.Contains(string(raw), "invalid_grant") {
			t.Errorf("calendar = %d %s", code, raw)
		}
		for _, secret := range []string{"oauth-client-secret-value", "oauth-refresh-token-value"} {
			if strings.Contains(string(raw), secret) || strings.Contains(ts.logs.String(), secret) {
				t.Errorf("an OAuth secret leaked")
			}
		}
	})

	t.Run("ResyncThroughTheAPI", func(t *testing.T) {
		fake.DeleteEvent(standup.ID)
		code, resp := httpDo(t, http.MethodPost, ts.url("/v1/calendars/"+calID+":resync"), nil, nil)
		if code != http.StatusOK {
			t.Fatalf("resync = %d: %s", code, resp)
		}
		var r calsyncv1.ResyncCalendarResponse
		unmarshalProto(t, resp, &r)
		waitForState(t, ts, r.GetDeliveryId(), calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		live := listEventsREST(t, ts.url("/v1/calendars/"+calID+"/events"))
		all := listEventsREST(t, ts.url("/v1/calendars/"+calID+"/events?include_deleted=true"))
		if len(live.GetEvents()) != 1 || len(all.GetEvents()) != 2 {
			t.Errorf("after deleting one: live %d, with tombstones %d", len(live.GetEvents()), len(all.GetEvents()))
		}
	})

	t.Run("UnknownEventTypeIsIgnored", func(t *testing.T) {
		body := []byte(`{"event": "bot.status_change", "data": {"bot_id": "b1"}}`)
		a := post(t, body, recallSigned(t, "svix", recallSecret, time.Now(), body))
		waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED)
	})

	t.Run("DuplicateMessageIDChangesNothing", func(t *testing.T) {
		body := syncEventsBody(cal.ID)
		h := recallSigned(t, "svix", recallSecret, time.Now(), body)
		first := post(t, body, h)
		// Svix retries keep the id and re-sign with a new timestamp.
		wh, _ := svix.NewWebhook(recallSecret)
		later := time.Now().Add(time.Minute)
		sig, _ := wh.Sign(h.Get("svix-id"), later, body)
		h.Set("svix-timestamp", strconv.FormatInt(later.Unix(), 10))
		h.Set("svix-signature", sig)
		again := post(t, body, h)
		if !again.Duplicate || again.DeliveryID != first.DeliveryID {
			t.Errorf("retry = %+v, first = %+v", again, first)
		}
	})

	rejected := []struct {
		name   string
		header func(body []byte) http.Header
	}{
		{"ErrNoSignature", func([]byte) http.Header { return nil }},
		{"ErrUnknownSecret", func(b []byte) http.Header {
			return recallSigned(t, "svix", "whsec_"+strings.Repeat("A", 32), time.Now(), b)
		}},
		{"ErrTimestampTooOld", func(b []byte) http.Header {
			return recallSigned(t, "svix", recallSecret, time.Now().Add(-6*time.Minute), b)
		}},
		{"ErrTimestampTooNew", func(b []byte) http.Header {
			return recallSigned(t, "svix", recallSecret, time.Now().Add(6*time.Minute), b)
		}},
		{"ErrBodyChanged", func(b []byte) http.Header {
			return recallSigned(t, "svix", recallSecret, time.Now(), append([]byte(" "), b...))
		}},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			before := len(listDeliveries(t, ts))
			body := syncEventsBody(cal.ID)
			code, resp := postWebhook(t, ts, "recall", body, tc.header(body))
			if code != http.StatusUnauthorized {
				t.Fatalf("= %d: %s, want 401", code, resp)
			}
			if after := len(listDeliveries(t, ts)); after != before {
				t.Errorf("a rejected delivery was stored")
			}
		})
	}
}

// TestRecallRateLimitedStillConverges: Recall answers 429 with Retry-After
// and a 5xx burst; the delivery is retried, not dead-lettered.
func TestRecallRateLimitedStillConverges(t *testing.T) {
	ts, fake := recallServer(t)
	cal := fake.PutCalendar(recalltest.Calendar{})
	start := time.Now().Add(time.Hour).Truncate(time.Minute)
	for i := range 150 { // two pages
		fake.PutEvent(recalltest.Google(fmt.Sprintf("g%d", i)).Summary(fmt.Sprint("event ", i)).Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	}
	fake.RateLimitNext(1, time.Second)
	fake.FailNext(2, http.StatusBadGateway)
	body := syncEventsBody(cal.ID)
	code, resp := postWebhook(t, ts, "recall", body, recallSigned(t, "svix", recallSecret, time.Now(), body))
	if code != http.StatusOK {
		t.Fatalf("= %d: %s", code, resp)
	}
	waitForState(t, ts, decodeAnswer(t, resp).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	resp2, err := calsyncv1.NewCalendarServiceClient(ts.conn).ListEvents(context.Background(),
		&calsyncv1.ListEventsRequest{CalendarId: model.CalendarID(model.ProviderRecall, "", cal.ID), PageSize: 1000})
	if err != nil || len(resp2.GetEvents()) != 150 {
		t.Fatalf("events = %d, %v", len(resp2.GetEvents()), err)
	}
}
