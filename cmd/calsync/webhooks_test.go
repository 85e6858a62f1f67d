package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

const postpressSecret = "pp-secret-1"

// postpressServer is calsync with postpress configured (two secrets, as
// during a rotation) and Recall's webhooks not configured.
func postpressServer(t *testing.T, mutate ...func(*serveConfig)) *testServer {
	t.Helper()
	cfg := defaultTestConfig(t)
	cfg.postpressAuthSecrets = "old-secret, " + postpressSecret
	for _, m := range mutate {
		m(&cfg)
	}
	return mustServe(t, cfg)
}

func postWebhook(t *testing.T, ts *testServer, provider string, body []byte, h http.Header) (int, []byte) {
	t.Helper()
	return httpDo(t, http.MethodPost, ts.url("/v1/webhooks/"+provider), body, h)
}

func ppAuth() http.Header { return http.Header{"Postpress-Auth": {postpressSecret}} }

// listDeliveries returns every delivery in the inbox.
func listDeliveries(t *testing.T, ts *testServer) []*calsyncv1.Delivery {
	t.Helper()
	resp, err := calsyncv1.NewDeliveryServiceClient(ts.conn).ListDeliveries(context.Background(), &calsyncv1.ListDeliveriesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetDeliveries()
}

// waitForState waits until delivery id reaches state and returns it.
func waitForState(t *testing.T, ts *testServer, id string, state calsyncv1.DeliveryState) *calsyncv1.Delivery {
	t.Helper()
	var found *calsyncv1.Delivery
	eventually(t, "delivery "+id+" to be "+state.String(), func() bool {
		for _, d := range listDeliveries(t, ts) {
			if d.GetId() == id && d.GetState() == state {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

type ingestAnswer struct {
	DeliveryID string `json:"delivery_id"`
	Duplicate  bool   `json:"duplicate"`
}

func decodeAnswer(t *testing.T, body []byte) ingestAnswer {
	t.Helper()
	var a ingestAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.DeliveryID == "" {
		t.Fatalf("answer %s: %v", body, err)
	}
	return a
}

func TestPostpressWebhook(t *testing.T) { onBackends(t, testPostpressWebhook) }

func testPostpressWebhook(t *testing.T, be backend) {
	ts := postpressServer(t, be.use(t))
	created := readTestdata(t, "postpress_created.json")

	t.Run("OK", func(t *testing.T) {
		// No Content-Type: postpress sends none on webhooks made through its API.
		code, body := postWebhook(t, ts, "postpress", created, ppAuth())
		if code != http.StatusOK {
			t.Fatalf("= %d: %s", code, body)
		}
		a := decodeAnswer(t, body)
		if a.Duplicate {
			t.Fatal("first delivery reported as duplicate")
		}
		waitForState(t, ts, a.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
		events := listEventsREST(t, ts.url("/v1/calendars/-/events"))
		if len(events.GetEvents()) != 1 {
			t.Fatalf("events = %v", events)
		}
		ev := events.GetEvents()[0]
		if ev.GetTitle() != "Meeting with customer" || ev.GetTimeZone() != "Europe/Paris" ||
			ev.GetStartTime().AsTime().Format("15:04Z07:00") != "13:30Z" {
			t.Errorf("event = %v", ev)
		}
		var cal map[string]any
		getJSON(t, ts.url("/v1/calendars/"+ev.GetCalendarId()), http.StatusOK, &cal)
	})

	t.Run("DuplicateChangesNothing", func(t *testing.T) {
		code, body := postWebhook(t, ts, "postpress", created, ppAuth())
		if code != http.StatusOK || !decodeAnswer(t, body).Duplicate {
			t.Fatalf("= %d: %s, want 200 duplicate", code, body)
		}
	})

	t.Run("ExactBytesAreHashed", func(t *testing.T) {
		// Odd whitespace is part of the body: one more space is another
		// delivery, the same bytes again are a duplicate.
		odd := append([]byte("\n\t  "), append(bytes.Clone(created), "\r\n  "...)...)
		_, b1 := postWebhook(t, ts, "postpress", odd, ppAuth())
		_, b2 := postWebhook(t, ts, "postpress", odd, ppAuth())
		_, b3 := postWebhook(t, ts, "postpress", append(odd, ' '), ppAuth())
		a1, a2, a3 := decodeAnswer(t, b1), decodeAnswer(t, b2), decodeAnswer(t, b3)
		if a1.Duplicate || !a2.Duplicate || a2.DeliveryID != a1.DeliveryID || a3.Duplicate {
			t.Fatalf("answers %v %v %v", a1, a2, a3)
		}
		// Same event, same version: processing them changes nothing.
		waitForState(t, ts, a3.DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	})
}

func TestWebhookBadInput(t *testing.T) { onBackends(t, testWebhookBadInput) }

func testWebhookBadInput(t *testing.T, be backend) {
	ts := postpressServer(t, be.use(t), func(c *serveConfig) { c.maxWebhookBytes = 64 << 10 })
	created := readTestdata(t, "postpress_created.json")

	rejected := []struct {
		name     string
		provider string
		body     []byte
		header   http.Header
		want     int
	}{
		{"ErrMissingCredentials", "postpress", created, nil, http.StatusUnauthorized},
		{"ErrWrongCredentials", "postpress", created, http.Header{"Postpress-Auth": {"wrong"}}, http.StatusUnauthorized},
		{"ErrCredentialsInOtherHeader", "postpress", created, http.Header{"X-Other": {postpressSecret}}, http.StatusUnauthorized},
		{"ErrUnknownProvider", "gcal", created, ppAuth(), http.StatusNotFound},
		{"ErrProviderNotConfigured", "recall", created, nil, http.StatusServiceUnavailable},
		{"ErrTooLarge", "postpress", bytes.Repeat([]byte("x"), 64<<10+1), ppAuth(), http.StatusRequestEntityTooLarge},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postWebhook(t, ts, tc.provider, tc.body, tc.header)
			if code != tc.want {
				t.Fatalf("= %d, want %d: %s", code, tc.want, body)
			}
			var e struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(body, &e) != nil || e.Message == "" {
				t.Errorf("no clear error message: %s", body)
			}
			if strings.Contains(string(body), postpressSecret) {
				t.Errorf("the answer leaks the secret: %s", body)
			}
		})
	}
	t.Run("ErrTooLargeWithoutContentLength", func(t *testing.T) {
		// A chunked body declares no length: the limit must hold while
		// reading.
		body := io.MultiReader(bytes.NewReader(created), bytes.NewReader(bytes.Repeat([]byte(" "), 64<<10)))
		req, err := http.NewRequest(http.MethodPost, ts.url("/v1/webhooks/postpress"), body)
		if err != nil {
			t.Fatal(err)
		}
		if req.ContentLength != 0 {
			t.Fatalf("the request declares its length (%d)", req.ContentLength)
		}
		req.Header = ppAuth()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			msg, _ := io.ReadAll(resp.Body)
			t.Fatalf("= %d, want 413: %s", resp.StatusCode, msg)
		}
	})
	t.Run("NothingRejectedWasStored", func(t *testing.T) {
		if ds := listDeliveries(t, ts); len(ds) != 0 {
			t.Fatalf("deliveries = %v", ds)
		}
	})

	deadLettered := []struct {
		name string
		body string
	}{
		{"ErrNotJSON", "this is not json"},
		{"ErrMalformedJSON", `{"event": "calendar_event_created", "id": `},
		{"ErrWrongJSONTypes", `{"event": "calendar_event_created", "account_id": 7, "calendar_id": ["x"], "id": true}`},
		{"ErrInvalidTimeZone", strings.Replace(string(created), `"Europe/Paris"`, `"Mars/Olympus_Mons"`, 1)},
		{"ErrEndBeforeStart", strings.Replace(string(created), `"2026-01-20T15:30:00+01:00"`, `"2026-01-20T13:30:00+01:00"`, 1)},
	}
	for _, tc := range deadLettered {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postWebhook(t, ts, "postpress", []byte(tc.body), ppAuth())
			if code != http.StatusOK {
				t.Fatalf("an authenticated delivery must be kept: = %d: %s", code, body)
			}
			d := waitForState(t, ts, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
			if d.GetLastError() == "" {
				t.Errorf("dead letter without a reason: %v", d)
			}
		})
	}

	t.Run("UnknownEventTypeIsIgnored", func(t *testing.T) {
		for _, body := range []string{
			`{"event": "account_status", "account_id": "a", "status": "sync_success"}`,
			`{"event": "calendar_event_moved", "account_id": "a", "calendar_id": "c", "id": "e"}`,
		} {
			code, resp := postWebhook(t, ts, "postpress", []byte(body), ppAuth())
			if code != http.StatusOK {
				t.Fatalf("= %d: %s", code, resp)
			}
			waitForState(t, ts, decodeAnswer(t, resp).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED)
		}
	})

	t.Run("ServerStaysUp", func(t *testing.T) {
		getJSON(t, ts.url("/healthz"), http.StatusOK, nil)
		if events := listEventsREST(t, ts.url("/v1/calendars/-/events?include_deleted=true")); len(events.GetEvents()) != 0 {
			t.Errorf("bad input produced events: %v", events)
		}
	})
}
