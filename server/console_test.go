package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
	"github.com/calsync/calsync/watch/watchtest"
)

// startHTTPServer serves a fresh database with cfg's changes applied and
// returns the server, its store and its HTTP base URL.
func startHTTPServer(t *testing.T, mutate func(*server.Config)) (*server.Server, store.Store, string) {
	t.Helper()
	db := openHTTPTestDB(t)
	srv, base := serveStore(t, db, db, mutate)
	return srv, db, base
}

// openHTTPTestDB opens a fresh database, closed when the test ends.
func openHTTPTestDB(t *testing.T) store.Store {
	t.Helper()
	db, err := testdb.Open(filepath.Join(t.TempDir(), "calsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// serveStore serves api (db, or a wrapper of it) with cfg's changes
// applied; the webhook receiver and the processor use db itself. It
// returns the server and its HTTP base URL; the server shuts down when the
// test ends, before db closes.
func serveStore(t *testing.T, db, api store.Store, mutate func(*server.Config)) (*server.Server, string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Watch: testWatchConfig()}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := server.New(cfg, server.Deps{
		Store: api, Logger: log,
		Receiver:  ingest.NewReceiver(db, ingest.ReceiverConfig{}),
		Processor: ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, "http://" + srv.HTTPAddr()
}

// do sends a request and returns the answer with its body read.
func do(t *testing.T, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

type historyAnswer struct {
	EventID    string            `json:"event_id"`
	CalendarID string            `json:"calendar_id"`
	Changes    []json.RawMessage `json:"changes"`
	NextCursor string            `json:"next_cursor"`
	Complete   bool              `json:"complete"`
}

func TestConsoleEventHistory(t *testing.T) {
	_, st, base := startHTTPServer(t, nil)
	calB := watchtest.CalendarID(model.ProviderPostpress, 2)
	x := watchtest.Event(model.ProviderPostpress, calA, 1, "Standup")
	other := watchtest.Event(model.ProviderPostpress, calA, 2, "Other")
	elsewhere := watchtest.Event(model.ProviderPostpress, calB, 1, "Elsewhere")
	moved := proto.Clone(x).(*calsyncv1.CalendarEvent)
	moved.Title = "Standup (moved)"
	watchtest.Commit(t, st, watchtest.Created(x), watchtest.Created(other), watchtest.Created(elsewhere))
	watchtest.Commit(t, st, watchtest.Updated(x, moved), watchtest.Updated(other, other), watchtest.Deleted(moved))

	history := func(t *testing.T, id, after string) (int, historyAnswer) {
		t.Helper()
		url := base + "/v1/console/events/" + id + "/history"
		if after != "" {
			url += "?after_cursor=" + after
		}
		resp, body := do(t, http.MethodGet, url, nil)
		var a historyAnswer
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
		}
		return resp.StatusCode, a
	}

	t.Run("OldestFirstWithChangedFields", func(t *testing.T) {
		code, a := history(t, x.GetId(), "")
		if code != http.StatusOK || !a.Complete || a.CalendarID != calA {
			t.Fatalf("= %d %+v", code, a)
		}
		var types, fields []string
		for _, raw := range a.Changes {
			var ch calsyncv1.Change
			unmarshalAPI(t, raw, &ch)
			if ch.GetEvent().GetId() != x.GetId() || ch.GetCursor() == "" {
				t.Errorf("change of another event or without cursor: %v", &ch)
			}
			types = append(types, ch.GetType().String())
			fields = append(fields, strings.Join(ch.GetChangedFields(), "+"))
		}
		want := "CHANGE_TYPE_CREATED,CHANGE_TYPE_UPDATED,CHANGE_TYPE_DELETED"
		if strings.Join(types, ",") != want || fields[1] != "title" {
			t.Errorf("types %v, changed fields %q; want %s and title", types, fields, want)
		}
	})
	t.Run("PagesWithNextCursor", func(t *testing.T) {
		ev := watchtest.Event(model.ProviderPostpress, calA, 3, "v0")
		changes := []*calsyncv1.Change{watchtest.Created(ev)}
		prev := ev
		for i := 1; i < 250; i++ {
			next := proto.Clone(prev).(*calsyncv1.CalendarEvent)
			next.Title = "v" + string(rune('a'+i%26))
			changes = append(changes, watchtest.Updated(prev, next))
			prev = next
		}
		watchtest.Commit(t, st, changes...)
		code, first := history(t, ev.GetId(), "")
		if code != http.StatusOK || first.Complete || len(first.Changes) != 200 {
			t.Fatalf("first page: %d, %d changes, complete %v", code, len(first.Changes), first.Complete)
		}
		code, second := history(t, ev.GetId(), first.NextCursor)
		if code != http.StatusOK || !second.Complete || len(second.Changes) != 50 {
			t.Fatalf("second page: %d, %d changes, complete %v", code, len(second.Changes), second.Complete)
		}
	})
	t.Run("ErrUnknownEvent", func(t *testing.T) {
		if code, _ := history(t, model.EventID(model.ProviderPostpress, calA, "nope"), ""); code != http.StatusNotFound {
			t.Errorf("= %d, want 404", code)
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		if code, _ := history(t, "not-an-id", ""); code != http.StatusBadRequest {
			t.Errorf("id: = %d, want 400", code)
		}
		if code, _ := history(t, x.GetId(), "garbage"); code != http.StatusBadRequest {
			t.Errorf("cursor: = %d, want 400", code)
		}
	})
}

func TestConsoleOverviewAndSyncState(t *testing.T) {
	_, st, base := startHTTPServer(t, nil)
	cursors := commitN(t, st, 0, 3)
	resp, body := do(t, http.MethodGet, base+"/v1/console/overview", nil)
	var o struct {
		InboxPending *float64 `json:"inbox_pending"`
		ChangeLog    struct {
			Head             uint64  `json:"head"`
			OldestCommitTime string  `json:"oldest_commit_time"`
			RetentionSeconds float64 `json:"retention_seconds"`
		} `json:"change_log"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &o) != nil {
		t.Fatalf("overview = %d: %s", resp.StatusCode, body)
	}
	if o.ChangeLog.Head != uint64(cursors[2]) || o.ChangeLog.OldestCommitTime == "" || o.InboxPending == nil || o.ChangeLog.RetentionSeconds <= 0 {
		t.Errorf("overview = %s; want head %d", body, cursors[2])
	}

	if err := st.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.PutCalendar(context.Background(), &calsyncv1.Calendar{Id: calA, Provider: model.ProviderPostpress}); err != nil {
			return err
		}
		return tx.PutSyncState(context.Background(), store.SyncState{CalendarID: calA, Watermark: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	}); err != nil {
		t.Fatal(err)
	}
	resp, body = do(t, http.MethodGet, base+"/v1/console/calendars/"+calA+"/sync", nil)
	var s struct {
		Watermark    string `json:"watermark"`
		LastFullSync string `json:"last_full_sync"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &s) != nil || s.Watermark != "2026-01-02T03:04:05Z" || s.LastFullSync != "" {
		t.Errorf("sync state = %d: %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, http.MethodGet, base+"/v1/console/calendars/"+watchtest.CalendarID(model.ProviderPostpress, 9)+"/sync", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown calendar: = %d, want 404", resp.StatusCode)
	}
}

// TestConsoleAuthentication: the console's data routes need a token like
// the rest of the API; its static files hold no data and need none, and
// carry a strict Content-Security-Policy.
func TestConsoleAuthentication(t *testing.T) {
	_, _, base := startHTTPServer(t, func(c *server.Config) { c.Tokens = server.NewTokens([]string{"tok-1"}) })
	for _, path := range []string{"/v1/console/overview", "/v1/console/events/" + model.EventID("postpress", calA, "e") + "/history", "/v1/console/calendars/" + calA + "/sync"} {
		if resp, _ := do(t, http.MethodGet, base+path, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token = %d, want 401", path, resp.StatusCode)
		}
	}
	if resp, body := do(t, http.MethodGet, base+"/v1/console/overview", http.Header{"Authorization": {"Bearer tok-1"}}); resp.StatusCode != http.StatusOK {
		t.Errorf("with a token = %d: %s", resp.StatusCode, body)
	}
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/pages/live.js", "/ui/console.css"} {
		resp, body := do(t, http.MethodGet, base+path, nil)
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != http.StatusOK || len(body) == 0 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s = %d, CSP %q", path, resp.StatusCode, csp)
		}
	}
	if resp, _ := do(t, http.MethodPost, base+"/ui/", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/ = %d, want 405", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	const allowed, other = "http://dash.example:8081", "http://evil.example"
	_, _, base := startHTTPServer(t, func(c *server.Config) {
		c.CORSAllowedOrigins = []string{"HTTP://dash.example:8081/"}
		c.MaxWebhookBytes = 1 << 20
	})
	preflight := func(origin, path, method string) *http.Response {
		resp, _ := do(t, http.MethodOptions, base+path, http.Header{
			"Origin": {origin}, "Access-Control-Request-Method": {method},
			"Access-Control-Request-Headers": {"authorization,last-event-id"},
		})
		return resp
	}
	t.Run("PreflightAllowed", func(t *testing.T) {
		for _, path := range []string{"/v1/events:watch", "/v1/calendars", "/v1/deliveries/1:retry", "/v1/console/overview"} {
			resp := preflight(allowed, path, http.MethodGet)
			h := resp.Header
			if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != allowed ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Last-Event-ID") ||
				!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Vary") != "Origin" {
				t.Errorf("OPTIONS %s = %d %v", path, resp.StatusCode, h)
			}
		}
	})
	t.Run("OtherOriginGetsNothing", func(t *testing.T) {
		resp := preflight(other, "/v1/events:watch", http.MethodGet)
		if resp.StatusCode == http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight = %d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = do(t, http.MethodGet, base+"/v1/calendars", http.Header{"Origin": {other}})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Vary") != "Origin" {
			t.Errorf("GET = %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("AnswersAllowed", func(t *testing.T) {
		resp, _ := do(t, http.MethodGet, base+"/v1/calendars", http.Header{"Origin": {allowed}})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != allowed {
			t.Errorf("GET /v1/calendars = %d %v", resp.StatusCode, resp.Header)
		}
		resp = openStream(t, base+"/v1/events:watch", http.Header{"Origin": {allowed}, "Accept": {"text/event-stream"}})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != allowed ||
			resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("SSE = %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("NeverWebhooks", func(t *testing.T) {
		resp := preflight(allowed, "/v1/webhooks/postpress", http.MethodPost)
		if resp.StatusCode == http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("webhook preflight = %d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = do(t, http.MethodPost, base+"/v1/webhooks/postpress", http.Header{"Origin": {allowed}})
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("webhook answer carries %v", resp.Header)
		}
	})
}

// openStream starts a streaming GET and returns once its headers arrived;
// the stream is closed when the test ends.
func openStream(t *testing.T, url string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func unmarshalAPI(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

// TestRESTAnswersCarryNoGRPCMetadata: the gRPC call behind a REST answer
// leaks none of its metadata (Grpc-Metadata-Content-Type: application/grpc)
// into the HTTP headers, on unary answers and streams alike.
func TestRESTAnswersCarryNoGRPCMetadata(t *testing.T) {
	_, _, base := startHTTPServer(t, nil)
	check := func(what string, h http.Header) {
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "grpc-") {
				t.Errorf("%s carries %s: %v", what, k, h[k])
			}
		}
	}
	resp, _ := do(t, http.MethodGet, base+"/v1/calendars", nil)
	check("GET /v1/calendars", resp.Header)
	resp, _ = do(t, http.MethodGet, base+"/v1/calendars/"+calA, nil)
	check("GET /v1/calendars/{id} (404)", resp.Header)
	check("SSE watch", openStream(t, base+"/v1/events:watch", http.Header{"Accept": {"text/event-stream"}}).Header)
	check("NDJSON watch", openStream(t, base+"/v1/events:watch", nil).Header)
}

func TestParseCORSOrigins(t *testing.T) {
	got, err := server.ParseCORSOrigins([]string{"https://Dash.Example.com", "http://127.0.0.1:8081/"})
	if err != nil || strings.Join(got, " ") != "https://dash.example.com http://127.0.0.1:8081" {
		t.Errorf("= %v, %v", got, err)
	}
	for _, bad := range []string{"*", "dash.example.com", "https://dash.example.com/app", "ftp://x", "https://u:p@x", "https://x?q=1"} {
		if _, err := server.ParseCORSOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// commitBetweenReads is a store that runs commit once, right after the
// first of the sync state's two reads (GetSyncState, ListDeliveries)
// returns: the processor finishing a resync between them.
type commitBetweenReads struct {
	store.Store
	once   sync.Once
	commit func()
}

func (s *commitBetweenReads) GetSyncState(ctx context.Context, id string) (store.SyncState, error) {
	st, err := s.Store.GetSyncState(ctx, id)
	s.once.Do(s.commit)
	return st, err
}

func (s *commitBetweenReads) ListDeliveries(ctx context.Context, q store.DeliveryQuery) ([]store.Delivery, error) {
	ds, err := s.Store.ListDeliveries(ctx, q)
	s.once.Do(s.commit)
	return ds, err
}

// TestConsoleSyncStateNeverShowsAResyncDoneWithoutItsResult: a resync's
// delivery and the sync state it sets commit together, so the console,
// which stops waiting once it sees the delivery finished, must not see it
// finished beside the sync state from before it, even when the commit
// falls between the answer's reads.
func TestConsoleSyncStateNeverShowsAResyncDoneWithoutItsResult(t *testing.T) {
	ctx := context.Background()
	db := openHTTPTestDB(t)
	if err := db.Update(ctx, func(tx store.Tx) error {
		return tx.PutCalendar(ctx, &calsyncv1.Calendar{Id: calA, Provider: model.ProviderRecall})
	}); err != nil {
		t.Fatal(err)
	}
	id, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: model.ProviderRecall, DedupKey: "resync:1",
		EventType: "calendar.resync", OrderingKey: calA, Body: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	full := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	committed := false
	wrapped := &commitBetweenReads{Store: db, commit: func() {
		committed = true
		if err := db.Update(ctx, func(tx store.Tx) error {
			if err := tx.PutSyncState(ctx, store.SyncState{CalendarID: calA, Watermark: full, LastFullSync: full}); err != nil {
				return err
			}
			return tx.FinishDelivery(ctx, id, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
		}); err != nil {
			t.Error(err)
		}
	}}
	_, base := serveStore(t, db, wrapped, nil)

	type answer struct {
		LastFullSync string `json:"last_full_sync"`
		Deliveries   []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"deliveries"`
	}
	get := func() answer {
		t.Helper()
		resp, body := do(t, http.MethodGet, base+"/v1/console/calendars/"+calA+"/sync", nil)
		var a answer
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &a) != nil || len(a.Deliveries) != 1 || a.Deliveries[0].ID != strconv.FormatInt(id, 10) {
			t.Fatalf("sync state = %d: %s", resp.StatusCode, body)
		}
		return a
	}
	first := get()
	if !committed {
		t.Fatal("the resync's commit did not run between the answer's reads")
	}
	if first.Deliveries[0].State != "DELIVERY_STATE_PENDING" && first.LastFullSync == "" {
		t.Errorf("the answer shows the resync %s with no full sync", first.Deliveries[0].State)
	}
	if then := get(); then.Deliveries[0].State != "DELIVERY_STATE_DONE" || then.LastFullSync != full.Format(time.RFC3339) {
		t.Errorf("after the commit: resync %s, last full sync %q", then.Deliveries[0].State, then.LastFullSync)
	}
}
