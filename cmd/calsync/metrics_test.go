package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// samples is one scrape: every sample's value by its name and labels, as
// in `calsync_webhooks_received_total{outcome="accepted",provider="postpress"}`.
type samples map[string]float64

// scrape GETs /metrics and parses it with Prometheus' own parser.
func scrape(t *testing.T, url, token string) samples {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	code, body := httpDo(t, http.MethodGet, url, nil, h)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", url, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := samples{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = value(f.GetType(), m)
		}
	}
	return out
}

// value is a sample's value; for a histogram, its count.
func value(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func TestMetrics(t *testing.T) {
	fake := recalltest.New(t)
	cfg := fullConfig(t, fake)
	cfg.maxWebhookBytes = 64 << 10
	cfg.watchMemory = 1 // so a resumed stream reads the change log
	ts := mustServe(t, cfg)
	conn := dialToken(t, ts.grpcAddr, goodToken)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	metricsURL := ts.url("/metrics")

	before := scrape(t, metricsURL, goodToken)
	if before[`calsync_watch_streams`] != 0 || before[`calsync_inbox_pending_deliveries`] != 0 {
		t.Fatalf("fresh server: %v", before)
	}

	// A live stream from now.
	watchCtx, stopWatch := context.WithCancel(ctx)
	live, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(watchCtx, &calsyncv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	opening, err := live.Recv()
	if err != nil {
		t.Fatal(err)
	}

	// The webhooks: two new postpress deliveries, a duplicate, one that
	// cannot be parsed (dead-lettered), bad credentials, an unknown
	// provider, a body over the limit, and a Recall hint that makes calsync
	// call Recall's API.
	created := readTestdata(t, "postpress_created.json")
	mustPost := func(provider string, body []byte, h http.Header, want int) {
		t.Helper()
		if code, resp := postWebhook(t, ts, provider, body, h); code != want {
			t.Fatalf("POST %s = %d, want %d: %s", provider, code, want, resp)
		}
	}
	mustPost("postpress", created, ppAuth(), http.StatusOK)
	mustPost("postpress", created, ppAuth(), http.StatusOK) // duplicate
	mustPost("postpress", []byte("not json"), ppAuth(), http.StatusOK)
	mustPost("postpress", created, http.Header{"Postpress-Auth": {"wrong"}}, http.StatusUnauthorized)
	mustPost("nope", created, ppAuth(), http.StatusNotFound)
	mustPost("postpress", bytes.Repeat([]byte("x"), 100<<10), ppAuth(), http.StatusRequestEntityTooLarge)
	cal := fake.PutCalendar(recalltest.Calendar{PlatformEmail: "owner@example.com"})
	hint := syncEventsBody(cal.ID)
	mustPost("recall", hint, recallSigned(t, "svix", recallSecret, time.Now(), hint), http.StatusOK)

	// The live stream gets the changes.
	first, err := live.Recv()
	if err != nil || first.GetChange() == nil {
		t.Fatalf("live stream: %v, %v", first, err)
	}
	var after samples
	eventually(t, "the inbox to be worked through", func() bool {
		after = scrape(t, metricsURL, goodToken)
		return after[`calsync_inbox_pending_deliveries`] == 0 && after[`calsync_inbox_dead_deliveries`] == 1 &&
			after[`calsync_deliveries_processed_total{outcome="done",provider="recall"}`] >= 1
	})

	// A resumed stream starts behind the (one-change) memory: it falls
	// back to the change log.
	resumed, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(watchCtx, &calsyncv1.WatchEventsRequest{AfterCursor: opening.GetBookmark().GetCursor()})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // its bookmark, then the first change
		if _, err := resumed.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "two streams to be open", func() bool {
		after = scrape(t, metricsURL, goodToken)
		return after[`calsync_watch_streams`] == 2
	})

	want := map[string]float64{
		`calsync_webhooks_received_total{outcome="accepted",provider="postpress"}`:        2,
		`calsync_webhooks_received_total{outcome="duplicate",provider="postpress"}`:       1,
		`calsync_webhooks_received_total{outcome="unauthenticated",provider="postpress"}`: 1,
		`calsync_webhooks_received_total{outcome="unknown_provider",provider="unknown"}`:  1,
		`calsync_webhooks_received_total{outcome="too_large",provider="postpress"}`:       1,
		`calsync_webhooks_received_total{outcome="accepted",provider="recall"}`:           1,
		`calsync_deliveries_processed_total{outcome="done",provider="postpress"}`:         1,
		`calsync_deliveries_processed_total{outcome="dead",provider="postpress"}`:         1,
		`calsync_deliveries_dead_lettered_total{provider="postpress"}`:                    1,
		`calsync_inbox_dead_deliveries`:                                                   1,
		`calsync_inbox_pending_deliveries`:                                                0,
		`calsync_inbox_oldest_pending_age_seconds`:                                        0,
		`calsync_recall_api_requests_total{endpoint="calendar_retrieve",status="200"}`:    1,
		`calsync_recall_api_requests_total{endpoint="calendar_event_list",status="200"}`:  1,
		`calsync_watch_streams`: 2,
		// One process on SQLite leads from the start.
		`calsync_leader`:                                          1,
		`calsync_leadership_changes_total`:                        0,
		`calsync_api_auth_failures_total{reason="missing_token"}`: 0,
		// Every webhook's answer is timed, refusals included.
		`calsync_webhook_answer_seconds{provider="postpress"}`: 5,
		`calsync_webhook_answer_seconds{provider="recall"}`:    1,
		`calsync_webhook_answer_seconds{provider="unknown"}`:   1,
		// REST webhooks are served in process, not through gRPC.
		`grpc_server_handled_total{grpc_code="OK",grpc_method="IngestWebhook",grpc_service="calsync.v1.WebhookService",grpc_type="unary"}`: 0,
		// Watch streams are counted as calls; the changes they send are
		// counted by calsync_watch_changes_sent_total, not once more per
		// gRPC message.
		`grpc_server_started_total{grpc_method="WatchEvents",grpc_service="calsync.v1.CalendarService",grpc_type="server_stream"}`:  2,
		`grpc_server_msg_sent_total{grpc_method="WatchEvents",grpc_service="calsync.v1.CalendarService",grpc_type="server_stream"}`: 0,
	}
	for k, v := range want {
		if got, ok := after[k]; (!ok && v != 0) || got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	// Histograms: one observation per group commit and per processing
	// attempt; the changes sent include both streams'.
	for k, min := range map[string]float64{
		`calsync_inbox_commit_batch_size`:                                          4,
		`calsync_inbox_commit_seconds`:                                             4,
		`calsync_watch_fallbacks_total`:                                            1,
		`calsync_watch_changes_sent_total`:                                         2,
		`calsync_delivery_processing_seconds{outcome="done",provider="postpress"}`: 1,
		`calsync_recall_api_request_seconds{endpoint="calendar_event_list"}`:       1,
	} {
		if after[k] < min {
			t.Errorf("%s = %v, want at least %v", k, after[k], min)
		}
	}
	// SQLite's checkpoints run on their own goroutine after writes.
	eventually(t, "a checkpoint to be counted", func() bool {
		s := scrape(t, metricsURL, goodToken)
		return s[`calsync_sqlite_checkpoints_total{mode="passive"}`] >= 1 && s[`calsync_sqlite_wal_pages`] > 0
	})
	// Memory bounds: the changes kept for watchers take some; the
	// processing queue, and Recall's queue of listings, are empty once
	// everything is processed.
	if after[`calsync_watch_memory_bytes`] <= 0 {
		t.Errorf("calsync_watch_memory_bytes = %v, want the changes kept in memory", after[`calsync_watch_memory_bytes`])
	}
	for _, k := range []string{`calsync_processing_queue_deliveries`, `calsync_processing_queue_bytes`, `calsync_recall_listings_waiting`} {
		if v, ok := after[k]; !ok || v != 0 {
			t.Errorf("%s = %v (exported: %v), want 0", k, v, ok)
		}
	}

	// Closing the streams: none open, two ended by their client.
	stopWatch()
	eventually(t, "the streams to be closed", func() bool {
		after = scrape(t, metricsURL, goodToken)
		return after[`calsync_watch_streams`] == 0 && after[`calsync_watch_streams_ended_total{reason="client"}`] == 2
	})
	// A request without a token is counted, and /metrics itself needs one.
	if code, _ := httpDo(t, http.MethodGet, metricsURL, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a token = %d", code)
	}
	if got := scrape(t, metricsURL, goodToken)[`calsync_api_auth_failures_total{reason="missing_token"}`]; got != 1 {
		t.Errorf("auth failures = %v, want 1", got)
	}
}

func TestMetricsListener(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.apiTokens = goodToken
	cfg.metricsAddr = "127.0.0.1:0"
	ts := mustServe(t, cfg)
	// /metrics moved off the API listener...
	if code, _ := httpDo(t, http.MethodGet, ts.url("/metrics"), nil, http.Header{"Authorization": {"Bearer " + goodToken}}); code == http.StatusOK {
		t.Errorf("/metrics is still served on the API listener")
	}
	// ...to its own, which needs no token.
	addr := metricsAddrFromLogs(t, ts.logs.String())
	s := scrape(t, "http://"+addr+"/metrics", "")
	if _, ok := s["calsync_watch_streams"]; !ok {
		t.Errorf("metrics listener lacks calsync_watch_streams")
	}
}

// metricsAddrFromLogs reads the metrics listener's address from the
// "calsync listening" log line.
func metricsAddrFromLogs(t *testing.T, logs string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if i := strings.Index(line, `"metrics_addr":"`); i >= 0 {
			rest := line[i+len(`"metrics_addr":"`):]
			return rest[:strings.Index(rest, `"`)]
		}
	}
	t.Fatalf("no metrics_addr in the logs:\n%s", logs)
	return ""
}
