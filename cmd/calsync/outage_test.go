package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"

	"github.com/calsync/calsync/internal/pgtest"
)

// grpcHealth asks the gRPC health service of addr for the server's status.
func grpcHealth(t *testing.T, conn *grpc.ClientConn) grpc_health_v1.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus()
}

// TestPostgresOutage runs the real binary on a private PostgreSQL that is
// stopped and started again. While it is down, webhooks get 503 (never
// 200), reads fail with 503, and gRPC health and /healthz say NOT_SERVING;
// once it is back, the same process serves again by itself, and every
// webhook answered 200 (and every one refused, sent again as a provider
// would) is stored exactly once.
func TestPostgresOutage(t *testing.T) {
	url := withPassword(pgtest.NewDatabase(t))
	env := []string{"CALSYNC_DB=" + url, "CALSYNC_DB_MAX_CONNS=4", "CALSYNC_POSTPRESS_AUTH_SECRETS=s3cret"}
	p := startBinary(t, env)
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := http.Header{"Postpress-Auth": {"s3cret"}}
	bodies := map[string][]byte{}
	acked := map[string]bool{}
	send := func(id string) int {
		if bodies[id] == nil {
			bodies[id] = postpressEventBody("calendar_event_created", id, "Outage", time.Now().UTC())
		}
		code, _ := httpDo(t, http.MethodPost, p.url("/v1/webhooks/postpress"), bodies[id], auth)
		if code == http.StatusOK {
			acked[id] = true
		}
		return code
	}
	healthz := func() int {
		code, _ := httpDo(t, http.MethodGet, p.url("/healthz"), nil, nil)
		return code
	}
	for i := range 3 {
		if code := send(fmt.Sprint("before", i)); code != http.StatusOK {
			t.Fatalf("webhook before the outage = %d", code)
		}
	}
	if code, st := healthz(), grpcHealth(t, conn); code != http.StatusOK || st != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("health before the outage: /healthz %d, gRPC %v", code, st)
	}

	// A watcher opened before the outage, live after its snapshot.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calendars := calsyncv1.NewCalendarServiceClient(conn)
	stream, err := calendars.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{InitialSnapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	watched := map[string]int{}
	var lastCursor string
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if c := resp.GetChange(); c != nil {
			watched[c.GetEvent().GetProviderEventId()]++
			lastCursor = c.GetCursor()
		}
		if b := resp.GetBookmark(); b.GetSnapshotComplete() {
			lastCursor = b.GetCursor()
			break
		}
	}

	srv := pgtest.Shared(t)
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	// A new watch needs the database for its snapshot: it ends with
	// UNAVAILABLE (its error arrives with its first message).
	if fresh, err := calendars.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{InitialSnapshot: true}); err != nil {
		t.Fatal(err)
	} else if _, err := fresh.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("new watch with a snapshot while PostgreSQL is down: %v, want UNAVAILABLE", err)
	}
	for i := range 5 {
		if code := send(fmt.Sprint("during", i)); code != http.StatusServiceUnavailable {
			t.Errorf("webhook while PostgreSQL is down = %d, want 503", code)
		}
	}
	if code, _ := httpDo(t, http.MethodGet, p.url("/v1/calendars/-/events"), nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("read while PostgreSQL is down = %d, want 503", code)
	}
	eventually(t, "health to say NOT_SERVING", func() bool {
		return grpcHealth(t, conn) == grpc_health_v1.HealthCheckResponse_NOT_SERVING
	})
	if code := healthz(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while PostgreSQL is down = %d, want 503", code)
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	eventually(t, "health to say SERVING again", func() bool {
		return grpcHealth(t, conn) == grpc_health_v1.HealthCheckResponse_SERVING && healthz() == http.StatusOK
	})
	// The provider sends again what was refused; new webhooks go through.
	for i := range 5 {
		if code := send(fmt.Sprint("during", i)); code != http.StatusOK {
			t.Errorf("webhook refused during the outage, sent again = %d", code)
		}
		if code := send(fmt.Sprint("after", i)); code != http.StatusOK {
			t.Errorf("webhook after the outage = %d", code)
		}
	}
	// The watcher sees every acknowledged event once: its stream stayed
	// open, or ended with UNAVAILABLE and resumes from its last cursor.
	for missing := true; missing; {
		missing = false
		for id := range acked {
			if watched[id] == 0 {
				missing = true
			}
		}
		if !missing {
			break
		}
		resp, err := stream.Recv()
		if status.Code(err) == codes.Unavailable {
			stream, err = calendars.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{AfterCursor: lastCursor})
			if err != nil {
				t.Fatalf("resume the watch: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("watch after the outage: %v (seen %v)", err, watched)
		}
		if c := resp.GetChange(); c != nil && c.GetEvent() != nil {
			watched[c.GetEvent().GetProviderEventId()]++
			lastCursor = c.GetCursor()
		}
	}
	for id, n := range watched {
		if n != 1 {
			t.Errorf("watcher saw event %s %d times", id, n)
		}
	}
	got := listEventsREST(t, p.url("/v1/calendars/-/events?page_size=100"))
	stored := map[string]int{}
	for _, e := range got.GetEvents() {
		stored[e.GetProviderEventId()]++
	}
	if len(got.GetEvents()) != len(acked) {
		t.Errorf("%d events stored, want the %d acknowledged: %v", len(got.GetEvents()), len(acked), stored)
	}
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged event %s stored %d times", id, stored[id])
		}
	}
	p.stop(t)
	if logs := p.logs.String(); !strings.Contains(logs, "database unreachable") || !strings.Contains(logs, "database reachable again") {
		t.Errorf("the outage and the recovery are not in the logs:\n%s", logs)
	}
}

// TestPostgresServeWaitsForDatabase: calsync serve started while its
// PostgreSQL is down keeps trying (logging the URL without its password)
// and starts serving once the database is up.
func TestPostgresServeWaitsForDatabase(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.dbPath = withPassword(pgtest.NewDatabase(t))
	srv := pgtest.Shared(t)
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	logs := &syncBuffer{}
	ready := make(chan struct{})
	cfg.ready = func(string, string) { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, logs) }()
	eventually(t, "serve to retry", func() bool { return strings.Contains(logs.String(), "database unreachable; retrying") })
	select {
	case <-ready:
		t.Fatal("serve started without its database")
	default:
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start once the database was up:\n%s", logs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if strings.Contains(logs.String(), pgPassword) {
		t.Errorf("the password appears in the logs:\n%s", logs)
	}
}

// TestPostgresServeGivesUp: with the database unreachable for longer than
// --db-open-timeout, serve exits with an error that says so.
func TestPostgresServeGivesUp(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.dbPath = "postgres://calsync:" + pgPassword + "@127.0.0.1:1/calsync?sslmode=disable"
	cfg.dbOpenTimeout = time.Second
	logs := &syncBuffer{}
	err := serve(context.Background(), cfg, logs)
	if err == nil || !strings.Contains(err.Error(), "--db-open-timeout") {
		t.Fatalf("serve = %v, want an error naming --db-open-timeout", err)
	}
	if errors.Is(err, context.Canceled) || strings.Contains(err.Error(), pgPassword) || strings.Contains(logs.String(), pgPassword) {
		t.Fatalf("error %v or the logs show the password:\n%s", err, logs)
	}
}

// TestPostgresRestartUnderLoad restarts PostgreSQL (a fast shutdown, as
// `pg_ctl restart -m fast` or a failover does) while a few clients send
// signed postpress webhooks to the real binary without pause. Answers
// other than 200 are allowed while it restarts; every webhook answered
// 200 is stored and processed exactly once (one delivery, one event, one
// change), and a refused one sent again is too.
func TestPostgresRestartUnderLoad(t *testing.T) {
	url := withPassword(pgtest.NewDatabase(t))
	env := []string{"CALSYNC_DB=" + url, "CALSYNC_DB_MAX_CONNS=8", "CALSYNC_POSTPRESS_AUTH_SECRETS=s3cret"}
	p := startBinary(t, env)
	client := &http.Client{Timeout: 30 * time.Second}
	post := func(body []byte) (int, error) {
		req, err := http.NewRequest(http.MethodPost, p.url("/v1/webhooks/postpress"), bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Postpress-Auth", "s3cret")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	const senders = 4
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		refused = map[string]int{} // id -> status (0: transport error)
		bodies  = map[string][]byte{}
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load%d-%d", s, i)
				body := postpressEventBody("calendar_event_created", id, "Load", time.Now().UTC())
				code, err := post(body)
				mu.Lock()
				bodies[id] = body
				if err == nil && code == http.StatusOK {
					acked[id] = true
				} else {
					refused[id] = code
				}
				mu.Unlock()
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	eventually(t, "webhooks to be answered before the restart", func() bool { return ackedCount() >= 50 })
	if err := pgtest.Shared(t).Restart(); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	atRestart := ackedCount()
	eventually(t, "webhooks to be answered after the restart", func() bool { return ackedCount() >= atRestart+50 })
	close(stop)
	wg.Wait()

	// The provider sends again what was refused.
	mu.Lock()
	defer mu.Unlock()
	for id, code := range refused {
		if code != 0 && code != http.StatusServiceUnavailable {
			t.Errorf("webhook %s answered %d during the restart, want 503 (or 200)", id, code)
		}
		if code, err := post(bodies[id]); err != nil || code != http.StatusOK {
			t.Errorf("webhook %s sent again after the restart = %d, %v", id, code, err)
		} else {
			acked[id] = true
		}
	}
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	// changes counts the events' creations (type 1, CREATED); the
	// calendar's own change is not a webhook's.
	var deliveries, done, events, changes int
	if err := pg.QueryRow(ctx, `SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM deliveries WHERE state = 2),
		(SELECT count(*) FROM events), (SELECT count(*) FROM changes WHERE type = 1)`).Scan(&deliveries, &done, &events, &changes); err != nil {
		t.Fatal(err)
	}
	if deliveries != len(acked) || done != len(acked) || events != len(acked) || changes != len(acked) {
		t.Errorf("%d webhooks acknowledged; PostgreSQL holds %d deliveries (%d DONE), %d events, %d creations: want one of each per webhook",
			len(acked), deliveries, done, events, changes)
	}
	// Through the API too: every acknowledged event, once.
	seen := map[string]int{}
	pageToken := ""
	for {
		got := listEventsREST(t, p.url("/v1/calendars/-/events?page_size=1000&page_token="+pageToken))
		for _, e := range got.GetEvents() {
			seen[e.GetProviderEventId()]++
		}
		if pageToken = got.GetNextPageToken(); pageToken == "" {
			break
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged event %s listed %d times", id, seen[id])
		}
	}
	t.Logf("%d webhooks acknowledged, %d refused during the restart and sent again", len(acked), len(refused))
	p.stop(t)
}
