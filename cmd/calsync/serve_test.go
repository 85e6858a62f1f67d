package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

func TestServeAPI(t *testing.T) { onBackends(t, testServeAPI) }

func testServeAPI(t *testing.T, be backend) {
	cfg := defaultTestConfig(t)
	be.use(t)(&cfg)
	ts := mustServe(t, cfg)
	ctx := context.Background()

	t.Run("HealthServing", func(t *testing.T) {
		resp, err := grpc_health_v1.NewHealthClient(ts.conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, %v", resp, err)
		}
		var body map[string]any
		getJSON(t, ts.url("/healthz"), http.StatusOK, &body)
		if body["status"] != "SERVING" {
			t.Errorf("/healthz = %v", body)
		}
	})

	t.Run("ReflectionListsServices", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
		}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"calsync.v1.CalendarService", "calsync.v1.WebhookService", "calsync.v1.DeliveryService", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection services %v lack %s", names, want)
			}
		}
	})

	t.Run("EmptyStoreOverREST", func(t *testing.T) {
		var body map[string]any
		getJSON(t, ts.url("/v1/calendars"), http.StatusOK, &body)
		cals, ok := body["calendars"].([]any)
		if !ok || len(cals) != 0 {
			t.Errorf(`GET /v1/calendars = %v, want {"calendars": [], ...}`, body)
		}
	})

	t.Run("EmptyStoreOverGRPC", func(t *testing.T) {
		resp, err := calsyncv1.NewCalendarServiceClient(ts.conn).ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-"})
		if err != nil || len(resp.GetEvents()) != 0 || resp.GetNextPageToken() != "" {
			t.Fatalf("ListEvents = %v, %v", resp, err)
		}
	})

	client := calsyncv1.NewCalendarServiceClient(ts.conn)
	errorCases := []struct {
		name     string
		call     func() error
		path     string
		wantCode codes.Code
		wantHTTP int
	}{
		{
			name: "ErrNotFound",
			call: func() error {
				_, err := client.GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: "cal_aaaaaaaaaaaaaaaaaaaaaaaa"})
				return err
			},
			path:     "/v1/calendars/cal_aaaaaaaaaaaaaaaaaaaaaaaa",
			wantCode: codes.NotFound, wantHTTP: http.StatusNotFound,
		},
		{
			name: "ErrMalformedID",
			call: func() error {
				_, err := client.GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: "nope"})
				return err
			},
			path:     "/v1/calendars/nope",
			wantCode: codes.InvalidArgument, wantHTTP: http.StatusBadRequest,
		},
		{
			name: "ErrBadPageToken",
			call: func() error {
				_, err := client.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{PageToken: "!!"})
				return err
			},
			path:     "/v1/calendars?page_token=!!",
			wantCode: codes.InvalidArgument, wantHTTP: http.StatusBadRequest,
		},
		{
			name: "ErrBadTimeRange",
			call: func() error {
				_, err := client.ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-", PageSize: -1})
				return err
			},
			path:     "/v1/calendars/-/events?start_time=2026-02-01T00:00:00Z&end_time=2026-01-01T00:00:00Z",
			wantCode: codes.InvalidArgument, wantHTTP: http.StatusBadRequest,
		},
		{
			name: "ErrUnknownProviderFilter",
			call: func() error {
				_, err := client.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{Provider: "gcal"})
				return err
			},
			path:     "/v1/calendars?provider=gcal",
			wantCode: codes.InvalidArgument, wantHTTP: http.StatusBadRequest,
		},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.wantCode {
				t.Errorf("gRPC code = %v, want %v", got, tc.wantCode)
			}
			code, body := httpDo(t, http.MethodGet, ts.url(tc.path), nil, nil)
			if code != tc.wantHTTP {
				t.Errorf("GET %s = %d, want %d: %s", tc.path, code, tc.wantHTTP, body)
			}
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Code != int(tc.wantCode) || e.Message == "" {
				t.Errorf("error body = %s", body)
			}
		})
	}
}

// TestBinaryRestart runs the real binary: data written through a webhook
// survives a clean restart, and the process shuts down in order on SIGTERM.
func TestBinaryRestart(t *testing.T) { onBackends(t, testBinaryRestart) }

func testBinaryRestart(t *testing.T, be backend) {
	db := be.NewDatabase(t)
	env := []string{"CALSYNC_DB=" + db, "CALSYNC_POSTPRESS_AUTH_SECRETS=s3cret"}
	p := startBinary(t, env)

	body := readTestdata(t, "postpress_created.json")
	code, resp := httpDo(t, http.MethodPost, p.url("/v1/webhooks/postpress"), body, http.Header{"Postpress-Auth": {"s3cret"}})
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, resp)
	}
	var first *calsyncv1.ListEventsResponse
	eventually(t, "the event to be stored", func() bool {
		first = listEventsREST(t, p.url("/v1/calendars/-/events"))
		return len(first.GetEvents()) == 1
	})
	p.stop(t)

	p = startBinary(t, env)
	again := listEventsREST(t, p.url("/v1/calendars/-/events"))
	if len(again.GetEvents()) != 1 || again.GetEvents()[0].GetTitle() != "Meeting with customer" ||
		again.GetEvents()[0].GetId() != first.GetEvents()[0].GetId() {
		t.Fatalf("after restart: %v, before: %v", again, first)
	}
	p.stop(t)
}
