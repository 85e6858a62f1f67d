package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// cli runs one calsync command line in-process and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// jsonLines parses --json output: one object per line.
func jsonLines[M any, P interface {
	*M
	proto.Message
}](t *testing.T, out string) []P {
	t.Helper()
	var msgs []P
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		m := P(new(M))
		if err := protojson.Unmarshal([]byte(line), m); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// withToken is ts with a gRPC connection that sends token.
func (ts *testServer) withToken(t *testing.T, token string) *testServer {
	t.Helper()
	c := *ts
	c.conn = dialToken(t, ts.grpcAddr, token)
	return &c
}

func TestCLI(t *testing.T) {
	fake := recalltest.New(t)
	cfg := fullConfig(t, fake)
	ts := mustServe(t, cfg)
	t.Setenv("CALSYNC_TOKEN", goodToken)
	t.Setenv("CALSYNC_SERVER", ts.grpcAddr)

	// Data: a Recall calendar with an event, and a dead postpress delivery.
	rcal := fake.PutCalendar(recalltest.Calendar{PlatformEmail: "owner@example.com"})
	start := time.Now().Add(48 * time.Hour).Truncate(time.Hour).UTC()
	fake.PutEvent(recalltest.Google("g1").Summary("Planning").Timed(start, start.Add(time.Hour), "Europe/Paris").
		Meet("https://meet.google.com/abc-defg-hij").Event(rcal.ID))
	calID := model.CalendarID(model.ProviderRecall, "", rcal.ID)
	hint := syncEventsBody(rcal.ID)
	code, body := postWebhook(t, ts, "recall", hint, recallSigned(t, "svix", recallSecret, time.Now(), hint))
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	waitForState(t, ts.withToken(t, goodToken), decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	code, body = postWebhook(t, ts, "postpress", []byte("not json"), ppAuth())
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	deadID := decodeAnswer(t, body).DeliveryID
	waitForState(t, ts.withToken(t, goodToken), deadID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)

	t.Run("CalendarsList", func(t *testing.T) {
		code, out, errOut := cli(t, "calendars", "list")
		if code != 0 || !strings.HasPrefix(out, "ID") || !strings.Contains(out, calID) || !strings.Contains(out, "connected") {
			t.Fatalf("exit %d:\n%s%s", code, out, errOut)
		}
		code, out, _ = cli(t, "calendars", "list", "--json", "--provider", "recall")
		cals := jsonLines[calsyncv1.Calendar](t, out)
		if code != 0 || len(cals) != 1 || cals[0].GetId() != calID || cals[0].GetEmail() != "owner@example.com" {
			t.Fatalf("exit %d: %v", code, cals)
		}
	})
	t.Run("CalendarsGet", func(t *testing.T) {
		code, out, _ := cli(t, "calendars", "get", calID, "--json")
		cals := jsonLines[calsyncv1.Calendar](t, out)
		if code != 0 || len(cals) != 1 || cals[0].GetId() != calID {
			t.Fatalf("exit %d: %s", code, out)
		}
		code, out, _ = cli(t, "calendars", "get", calID)
		if code != 0 || !strings.Contains(out, "owner@example.com") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	var eventID string
	t.Run("EventsList", func(t *testing.T) {
		code, out, _ := cli(t, "events", "list", "--json", "--from", start.Add(-time.Hour).Format(time.RFC3339), "--to", start.Add(time.Hour).Format(time.RFC3339))
		evs := jsonLines[calsyncv1.CalendarEvent](t, out)
		if code != 0 || len(evs) != 1 || evs[0].GetTitle() != "Planning" {
			t.Fatalf("exit %d: %s", code, out)
		}
		eventID = evs[0].GetId()
		code, out, _ = cli(t, "events", "list", "--json", "--from", start.Add(2*time.Hour).Format(time.RFC3339))
		if code != 0 || out != "" {
			t.Errorf("events after the range: exit %d: %q", code, out)
		}
		code, out, _ = cli(t, "events", "list", "--json", "--updated-since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		if code != 0 || out != "" {
			t.Errorf("events updated in the future: exit %d: %q", code, out)
		}
		code, out, _ = cli(t, "events", "list", "--calendar", calID)
		if code != 0 || !strings.Contains(out, "Planning") || !strings.Contains(out, "https://meet.google.com/abc-defg-hij") {
			t.Errorf("table: exit %d:\n%s", code, out)
		}
	})
	t.Run("EventsGet", func(t *testing.T) {
		code, out, _ := cli(t, "events", "get", calID, eventID, "--json")
		evs := jsonLines[calsyncv1.CalendarEvent](t, out)
		if code != 0 || len(evs) != 1 || evs[0].GetId() != eventID {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	t.Run("DeliveriesListAndRetry", func(t *testing.T) {
		code, out, _ := cli(t, "deliveries", "list", "--state", "dead", "--json")
		ds := jsonLines[calsyncv1.Delivery](t, out)
		if code != 0 || len(ds) != 1 || ds[0].GetId() != deadID || ds[0].GetLastError() == "" {
			t.Fatalf("exit %d: %s", code, out)
		}
		code, out, _ = cli(t, "deliveries", "list")
		if code != 0 || !strings.Contains(out, "dead") || !strings.Contains(out, "done") {
			t.Fatalf("table: exit %d:\n%s", code, out)
		}
		code, out, _ = cli(t, "deliveries", "retry", deadID, "--json")
		ds = jsonLines[calsyncv1.Delivery](t, out)
		if code != 0 || len(ds) != 1 || ds[0].GetState() != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	t.Run("Resync", func(t *testing.T) {
		code, out, _ := cli(t, "resync", calID, "--json")
		var resp struct {
			DeliveryID string `json:"delivery_id"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &resp) != nil || resp.DeliveryID == "" {
			t.Fatalf("exit %d: %q", code, out)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"calendars", "get", "cal_aaaaaaaaaaaaaaaaaaaaaaaa"}, 1, "NOT_FOUND"},
			{[]string{"calendars", "get", "nope"}, 1, "INVALID_ARGUMENT"},
			{[]string{"calendars", "get"}, 2, "takes 1 argument"},
			{[]string{"events", "list", "--from", "yesterday"}, 2, "RFC 3339"},
			{[]string{"deliveries", "list", "--state", "sleeping"}, 2, "unknown delivery state"},
			{[]string{"calendars", "list", "--token", "tok-wrong"}, 1, "UNAUTHENTICATED"},
			{[]string{"calendars"}, 2, "needs a subcommand"},
		} {
			code, _, errOut := cli(t, c.args...)
			last := strings.TrimSpace(errOut)
			if i := strings.LastIndex(last, "\n"); i >= 0 {
				last = last[i+1:]
			}
			if code != c.code || !strings.Contains(last, c.want) {
				t.Errorf("%v: exit %d, last line %q; want %d, %q", c.args, code, last, c.code, c.want)
			}
		}
	})
}
