package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/internal/stagebench"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/store/sqlite"
)

const (
	benchPostpressSecret = "bench-postpress-secret"
	benchPostpressHeader = "Postpress-Auth"
)

var benchRecallSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("bench-recall-secret-0123456789"))

// startIntakeBench starts a real server, as `calsync serve` configures it,
// over a real SQLite file with synchronous=NORMAL (no fsync per commit),
// and returns its HTTP handler: the one the listener serves, so a request
// goes through body limits, the gateway and its in-process webhook
// handler, verification and the inbox's group commit, with no HTTP client
// or TCP in the measurement. The processor does not run: this is intake.
func startIntakeBench(b testing.TB) http.Handler {
	return startIntakeServer(b, false)
}

// startIntakeServer is startIntakeBench; with applying, the server is the
// one `calsync serve` runs: the receiver also applies each postpress
// delivery in the transaction that commits it, and SQLite commits with
// synchronous=FULL, so the WAL is written one call per commit and synced
// beside the next transaction (the commit path of store/sqlite/durable.go).
func startIntakeServer(b testing.TB, applying bool) http.Handler {
	b.Helper()
	ctx := context.Background()
	opts := sqlite.Options{Synchronous: "NORMAL"}
	if applying {
		opts = sqlite.Options{}
	}
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "calsync.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	auth, err := postpress.NewAuthenticator(benchPostpressHeader, []string{benchPostpressSecret})
	if err != nil {
		b.Fatal(err)
	}
	verifier, err := recall.NewVerifier([]string{benchRecallSecret})
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	proc := ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log})
	recvCfg := ingest.ReceiverConfig{Postpress: auth, Recall: verifier, Notify: proc.Notify}
	if applying {
		recvCfg.Processor = proc
	}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
		WebhookHeaders: []string{benchPostpressHeader}},
		Deps{Store: db, Logger: log, Processor: proc, Receiver: ingest.NewReceiver(db, recvCfg)})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(ctx) })
	return srv.http.Handler
}

// BenchmarkStageHTTPIntake is the HTTP intake stage: POST
// /v1/webhooks/{provider} through the server's real handler, 64 requests
// in flight (the closed loop's shape), every body distinct so none is a
// duplicate. The inbox commit is real (SQLite, synchronous=NORMAL, so the
// figure is the HTTP path and the commit's CPU without waiting on fsync);
// cpu-µs/webhook is the process's CPU, commit included, and allocs/op
// include the benchmark's own request and recorder (a few small objects).
func BenchmarkStageHTTPIntake(b *testing.B) {
	b.Run("provider=postpress", func(b *testing.B) {
		handler := startIntakeBench(b)
		template := []byte(`{"event":"calendar_event_updated","webhook_name":"CALENDAR_EVENTS_WEBHOOK","account_id":"a4qFy0liRAGo-oZ2YFpirQ","id":"EVENTID","master_event_id":"","calendar_id":"owner@example.com","created_at":"2026-01-16T16:14:01.000Z","updated_at":"2026-01-16T16:15:41.115Z","title":"Meeting with customer","body":"Important","location":"Meets","is_cancelled":false,"is_all_day":false,"is_attendees_list_hidden":false,"attendees":[{"email":"dev@example.com","display_name":"Dev","response_status":"accepted"}],"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Europe/Paris"},"end":{"date_time":"2026-01-20T15:30:00+01:00","time_zone":"Europe/Paris"},"organizer":{"email":"owner@example.com","display_name":""},"visibility":"private","transparency":"transparent","event_type":"default","color":"#039BE5"}`)
		bodies := make([][]byte, b.N)
		for i := range bodies {
			bodies[i] = bytes.Replace(template, []byte("EVENTID"), fmt.Appendf(nil, "evt%09d", i), 1)
		}
		runIntake(b, handler, "/v1/webhooks/postpress", bodies, func(int) http.Header {
			return http.Header{benchPostpressHeader: {benchPostpressSecret}, "Content-Type": {"application/json"}}
		})
	})
	b.Run("provider=recall", func(b *testing.B) {
		handler := startIntakeBench(b)
		wh, err := svix.NewWebhook(benchRecallSecret)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		bodies := make([][]byte, b.N)
		headers := make([]http.Header, b.N)
		for i := range bodies {
			bodies[i] = fmt.Appendf(nil, `{"event":"calendar.sync_events","data":{"calendar_id":"cal-%d","last_updated_ts":"2026-01-20T10:00:00.123456+00:00"}}`, i%100)
			id := fmt.Sprintf("msg_%09d", i)
			sig, err := wh.Sign(id, now, bodies[i])
			if err != nil {
				b.Fatal(err)
			}
			headers[i] = http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)},
				"Webhook-Signature": {sig}, "Content-Type": {"application/json"}}
		}
		runIntake(b, handler, "/v1/webhooks/recall", bodies, func(i int) http.Header { return headers[i] })
	})
}

// BenchmarkWebhookRewrites is a webhook's whole server-side path as the
// ingestion benchmark drives it, minus TCP: postpress updates rewriting
// 1,000 events (each version newer, with a new title, so each is a change
// to announce), applied in the transaction that commits them, 64 in
// flight, through the server's real handler over a real SQLite file
// (synchronous=FULL, as served). Its instruction count per webhook, which the
// machine's neighbours do not move, is what `make bench-instructions`
// reports.
func BenchmarkWebhookRewrites(b *testing.B) {
	handler := startIntakeServer(b, true)
	const events = 1000
	start := time.Date(2026, 1, 16, 16, 0, 0, 0, time.UTC)
	bodies := make([][]byte, b.N)
	for i := range bodies {
		updated := start.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		bodies[i] = fmt.Appendf(nil, `{"event":"calendar_event_updated","webhook_name":"bench","account_id":"bench","id":"evt%05d","master_event_id":"","calendar_id":"cal%02d@example.com",`+
			`"created_at":"2026-01-01T00:00:00Z","updated_at":%q,"title":"Meeting, version %d","is_cancelled":false,"is_all_day":false,"is_attendees_list_hidden":false,"attendees":[],`+
			`"start":{"date_time":"2030-02-01T10:00:00Z","time_zone":"UTC"},"end":{"date_time":"2030-02-01T11:00:00Z","time_zone":"UTC"},`+
			`"organizer":{"email":"bench@example.com","display_name":"Bench"},"visibility":"default","transparency":"opaque","event_type":"default"}`,
			i%events, i%events%50, updated, i)
	}
	runIntake(b, handler, "/v1/webhooks/postpress", bodies, func(int) http.Header {
		return http.Header{benchPostpressHeader: {benchPostpressSecret}}
	})
}

// runIntake posts bodies[i] with header(i), 64 at a time, and fails on any
// answer but 200.
func runIntake(b *testing.B, handler http.Handler, path string, bodies [][]byte, header func(int) http.Header) {
	var next atomic.Int64
	target, err := url.Parse(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	cpu := stagebench.Start(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1) - 1)
			// As the server's connection hands it over: httptest.NewRequest
			// would parse each request through a bufio.Reader of its own,
			// 4 KB of garbage per webhook that a real connection reuses.
			req := &http.Request{Method: http.MethodPost, URL: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: header(i), Body: io.NopCloser(bytes.NewReader(bodies[i])), ContentLength: int64(len(bodies[i])),
				Host: "calsync.test", RemoteAddr: "192.0.2.1:1234", RequestURI: path}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("webhook %d: %d %s", i, rec.Code, rec.Body)
				return
			}
		}
	})
	cpu.Report(b, b.N, "webhook")
}
