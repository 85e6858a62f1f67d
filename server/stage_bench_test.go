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
	b.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "calsync.db"), sqlite.Options{Synchronous: "NORMAL"})
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
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
		WebhookHeaders: []string{benchPostpressHeader}},
		Deps{Store: db, Logger: log, Processor: proc,
			Receiver: ingest.NewReceiver(db, ingest.ReceiverConfig{Postpress: auth, Recall: verifier, Notify: proc.Notify})})
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

// runIntake posts bodies[i] with header(i), 64 at a time, and fails on any
// answer but 200.
func runIntake(b *testing.B, handler http.Handler, path string, bodies [][]byte, header func(int) http.Header) {
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	cpu := stagebench.Start(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1) - 1)
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(bodies[i]))
			req.Header = header(i)
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
