package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/calsync/calsync/client"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
	"github.com/calsync/calsync/watch"
)

// postpressHeader and postpressSecret authenticate the test's postpress
// webhooks.
const (
	postpressHeader = "Postpress-Auth"
	postpressSecret = "test-postpress-secret"
)

// testServer is a real calsync (gRPC, REST gateway, webhook intake and
// processing) over a SQLite file, which can be stopped and started again on
// the same file and the same addresses.
type testServer struct {
	tb       testing.TB
	path     string
	grpcAddr string
	httpAddr string

	// configure, if set, adjusts the server's configuration (TLS, tokens).
	configure func(*server.Config)

	mu   sync.Mutex
	st   store.Store
	stop func()
}

// startServer serves a new database until the test ends; configure, if
// given, adjusts the server's configuration.
func startServer(tb testing.TB, configure ...func(*server.Config)) *testServer {
	tb.Helper()
	ts := &testServer{tb: tb, path: filepath.Join(tb.TempDir(), "calsync.db"), grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}
	if len(configure) > 0 {
		ts.configure = configure[0]
	}
	if err := ts.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ts.Stop)
	return ts
}

func (ts *testServer) start() error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := testdb.Open(ts.path)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	auth, err := postpress.NewAuthenticator(postpressHeader, []string{postpressSecret})
	if err != nil {
		db.Close()
		return err
	}
	processor := ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log})
	cfg := server.Config{
		GRPCAddr: ts.grpcAddr, HTTPAddr: ts.httpAddr, ShutdownTimeout: 5 * time.Second,
		WebhookHeaders: []string{postpressHeader},
		Watch:          watch.Config{MinBookmarkInterval: 20 * time.Millisecond, FutureCursorWait: 200 * time.Millisecond},
	}
	if ts.configure != nil {
		ts.configure(&cfg)
	}
	srv, err := server.New(cfg, server.Deps{
		Store: db, Logger: log, Processor: processor,
		Receiver: ingest.NewReceiver(db, ingest.ReceiverConfig{Postpress: auth, Notify: processor.Notify}),
	})
	if err != nil {
		db.Close()
		return err
	}
	if err := srv.Start(ctx); err != nil {
		db.Close()
		return err
	}
	procCtx, stopProcessor := context.WithCancel(ctx)
	processed := make(chan struct{})
	go func() {
		processor.Run(procCtx)
		close(processed)
	}()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	// A restart listens where the first start did, as a restarted
	// calsync does.
	ts.grpcAddr, ts.httpAddr, ts.st = srv.GRPCAddr(), srv.HTTPAddr(), db
	var once sync.Once
	ts.stop = func() {
		once.Do(func() {
			srv.Shutdown(ctx)
			stopProcessor()
			<-processed
			db.Close()
		})
	}
	return nil
}

// Stop shuts calsync down: streams end with UNAVAILABLE, the database
// closes.
func (ts *testServer) Stop() {
	ts.mu.Lock()
	stop := ts.stop
	ts.mu.Unlock()
	stop()
}

// Restart stops calsync and starts it again on the same database and
// addresses.
func (ts *testServer) Restart() {
	ts.tb.Helper()
	ts.Stop()
	// The port was just released; another process may hold it for a
	// moment (TIME_WAIT does not block a listener, but a racing bind can).
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ts.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.tb.Fatalf("restart calsync: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Store returns the running server's store.
func (ts *testServer) Store() store.Store {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.st
}

// fastRetry reconnects quickly, so tests spend their time on what they
// test.
func fastRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 5 * time.Millisecond
	b.MaxInterval = 100 * time.Millisecond
	return b
}

// newClient connects a client to addr, closed when the test ends.
func newClient(tb testing.TB, addr string) *client.Client {
	tb.Helper()
	c, err := client.New(context.Background(), addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// postpressEvent is the part of a postpress calendar webhook the tests
// vary.
type postpressEvent struct {
	Event     string // calendar_event_created, _updated or _deleted
	ID        string
	Title     string
	Start     time.Time
	Minutes   int
	Location  string
	Cancelled bool
	// Version orders the deliveries of one event (postpress's updated_at).
	Version int
}

// body is the webhook's JSON body as postpress sends it.
func (e postpressEvent) body() []byte {
	updated := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(e.Version) * time.Second)
	m := map[string]any{
		"event": e.Event, "webhook_name": "CALENDAR_EVENTS_WEBHOOK", "account_id": "acct-1",
		"id": e.ID, "calendar_id": "owner@example.com",
		"created_at": "2026-01-01T00:00:00.000Z", "updated_at": updated.Format(time.RFC3339Nano),
	}
	if e.Event != postpress.EventDeleted {
		mins := e.Minutes
		if mins == 0 {
			mins = 30
		}
		m["title"] = e.Title
		m["location"] = e.Location
		m["is_cancelled"] = e.Cancelled
		m["attendees"] = []any{}
		m["start"] = map[string]string{"date_time": e.Start.Format(time.RFC3339), "time_zone": "UTC"}
		m["end"] = map[string]string{"date_time": e.Start.Add(time.Duration(mins) * time.Minute).Format(time.RFC3339), "time_zone": "UTC"}
		m["organizer"] = map[string]string{"email": "owner@example.com"}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// sendWebhook POSTs a postpress webhook to calsync's REST gateway with a
// real HTTP client, authenticated as postpress does. It returns the status,
// or an error when calsync could not be reached.
func sendWebhook(ctx context.Context, httpAddr string, e postpressEvent) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/v1/webhooks/postpress", bytes.NewReader(e.body()))
	if err != nil {
		return 0, err
	}
	req.Header.Set(postpressHeader, postpressSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// mustSendWebhook sends a webhook and requires 200.
func mustSendWebhook(tb testing.TB, ts *testServer, e postpressEvent) {
	tb.Helper()
	code, err := sendWebhook(context.Background(), ts.httpAddr, e)
	if err != nil || code != http.StatusOK {
		tb.Fatalf("webhook %s %s: %d, %v", e.Event, e.ID, code, err)
	}
}

// waitFor polls cond until it holds, failing the test after 20s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proxy is a TCP proxy in front of calsync whose connections the test can
// cut, to disconnect a client without stopping the server.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// startProxy forwards a free loopback port to target until the test ends.
func startProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	tb.Cleanup(func() {
		ln.Close()
		p.SetDown(true)
	})
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every connection through the proxy; clients reconnect.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// SetDown cuts every connection and refuses new ones while down is true.
func (p *proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// startExampleServer starts calsync for an Example, which has no
// testing.TB; the caller stops it with Stop.
func startExampleServer() *testServer {
	dir, err := os.MkdirTemp("", "calsync-example")
	if err != nil {
		panic(err)
	}
	ts := &testServer{path: filepath.Join(dir, "calsync.db"), grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}
	if err := ts.start(); err != nil {
		panic(err)
	}
	stop := ts.stop
	ts.stop = func() {
		stop()
		os.RemoveAll(dir)
	}
	return ts
}

// post sends postpress webhooks to calsync and waits until they are
// processed, so their changes are committed when it returns.
func (ts *testServer) post(events ...postpressEvent) {
	for _, e := range events {
		if code, err := sendWebhook(context.Background(), ts.httpAddr, e); err != nil || code != http.StatusOK {
			panic(fmt.Sprintf("webhook: %d %v", code, err))
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		stats, err := ts.Store().InboxStats(context.Background())
		if err == nil && stats.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			panic("webhooks not processed within 20s")
		}
	}
}

// meeting is a postpress webhook creating (or, with a higher version,
// updating) a meeting with a Google Meet link, at an hour of 2030-06-03.
// Its Meet code is the id's first three letters.
func meeting(id, title string, hour, version int) postpressEvent {
	return postpressEvent{Event: postpress.EventUpdated, ID: id, Title: title, Version: version,
		Start:    time.Date(2030, 6, 3, hour, 0, 0, 0, time.UTC),
		Location: "https://meet.google.com/" + id[:3] + "-defg-hij"}
}
