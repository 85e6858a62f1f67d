package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/api"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

func TestWatchStreamLimit(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.maxWatchStreams = 1
	ts := mustServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := calsyncv1.NewCalendarServiceClient(ts.conn)
	first, err := client.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
	if err == nil {
		_, err = first.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
	if err == nil {
		_, err = second.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream = %v, want RESOURCE_EXHAUSTED", err)
	}
	if code := restStatus(t, http.DefaultClient, http.MethodGet, ts.url("/v1/events:watch"), ""); code != http.StatusTooManyRequests {
		t.Errorf("REST stream over the limit = %d, want 429", code)
	}
	// Unary calls are not streams: they still work.
	if _, err := client.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{}); err != nil {
		t.Errorf("ListCalendars at the stream limit: %v", err)
	}
}

func TestOpenAPIServed(t *testing.T) {
	ts := mustServe(t, defaultTestConfig(t))
	code, body := httpDo(t, http.MethodGet, ts.url("/openapi.json"), nil, nil)
	if code != http.StatusOK || !bytes.Equal(body, api.OpenAPI) {
		t.Fatalf("GET /openapi.json = %d, %d bytes; want the embedded document", code, len(body))
	}
	var doc struct {
		Swagger string                    `json:"swagger"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Swagger != "2.0" {
		t.Fatalf("document: %v, swagger %q", err, doc.Swagger)
	}
	for _, p := range []string{"/v1/calendars", "/v1/deliveries", "/v1/deliveries/{delivery_id}:retry", "/v1/webhooks/{provider}"} {
		if doc.Paths[p] == nil {
			t.Errorf("the document lacks %s", p)
		}
	}
}
