package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgPassword is in the database URL the tests give calsync. The private
// server trusts local connections, so it is never checked, but calsync
// must never show it.
const pgPassword = "pg-pass-7c1e9"

// withPassword adds pgPassword to a pgtest URL.
func withPassword(url string) string {
	return strings.Replace(url, "://postgres@", "://postgres:"+pgPassword+"@", 1)
}

// TestPostgresServeIngestWatch runs the real binary on a private PostgreSQL
// (selected by CALSYNC_DB): signed postpress webhooks are committed and
// answered, a duplicate is absorbed, a watcher sees every change in cursor
// order, the data is in PostgreSQL and survives a restart, and the
// password in the URL appears nowhere in the logs.
func TestPostgresServeIngestWatch(t *testing.T) {
	url := withPassword(pgtest.NewDatabase(t))
	env := []string{"CALSYNC_DB=" + url, "CALSYNC_DB_MAX_CONNS=4", "CALSYNC_POSTPRESS_AUTH_SECRETS=s3cret", "CALSYNC_LOG_LEVEL=debug"}
	p := startBinary(t, env)
	if !strings.Contains(p.logs.String(), `"backend":"postgres"`) {
		t.Fatalf("calsync did not open PostgreSQL:\n%s", p.logs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{InitialSnapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot (empty) ends with a bookmark: from there the stream is
	// live.
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if resp.GetBookmark().GetSnapshotComplete() {
			break
		}
	}

	const n = 5
	for i := range n {
		body := postpressEventBody("calendar_event_created", fmt.Sprintf("pgevt%d", i), "Planning", time.Now().UTC())
		code, resp := httpDo(t, http.MethodPost, p.url("/v1/webhooks/postpress"), body, http.Header{"Postpress-Auth": {"s3cret"}})
		if code != http.StatusOK {
			t.Fatalf("webhook %d = %d: %s", i, code, resp)
		}
		if i == 0 {
			// A retry of the same body is absorbed.
			code, resp = httpDo(t, http.MethodPost, p.url("/v1/webhooks/postpress"), body, http.Header{"Postpress-Auth": {"s3cret"}})
			if code != http.StatusOK || !strings.Contains(string(resp), "duplicate") {
				t.Fatalf("retried webhook = %d: %s, want a duplicate", code, resp)
			}
		}
	}
	var lastCursor string
	seen := map[string]bool{}
	for len(seen) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch after %d changes: %v", len(seen), err)
		}
		c := resp.GetChange()
		if c == nil {
			continue
		}
		if seen[c.GetEvent().GetId()] {
			t.Fatalf("event %s seen twice", c.GetEvent().GetId())
		}
		seen[c.GetEvent().GetId()] = true
		if lastCursor != "" && len(c.GetCursor()) == len(lastCursor) && c.GetCursor() <= lastCursor {
			t.Fatalf("cursor %s after %s", c.GetCursor(), lastCursor)
		}
		lastCursor = c.GetCursor()
	}

	// The events are in PostgreSQL itself.
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	var stored, deliveries int
	if err := pg.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries)`).Scan(&stored, &deliveries); err != nil {
		t.Fatal(err)
	}
	if stored != n || deliveries != n {
		t.Fatalf("PostgreSQL holds %d events and %d deliveries, want %d of each", stored, deliveries, n)
	}
	p.stop(t)

	// A restart finds everything again.
	p = startBinary(t, env)
	if got := listEventsREST(t, p.url("/v1/calendars/-/events")); len(got.GetEvents()) != n {
		t.Fatalf("after restart: %d events, want %d", len(got.GetEvents()), n)
	}
	p.stop(t)
	if strings.Contains(p.logs.String(), pgPassword) {
		t.Fatalf("the database password appears in the logs:\n%s", p.logs)
	}
}

// TestPostgresUnreachableHidesPassword: when PostgreSQL cannot be reached,
// calsync fails to start with an error that names the database but not
// its password.
func TestPostgresUnreachableHidesPassword(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.dbPath = "postgres://calsync:" + pgPassword + "@127.0.0.1:1/calsync?sslmode=disable&connect_timeout=2"
	cfg.dbOpenTimeout = 0 // Try once.
	logs := &syncBuffer{}
	err := serve(context.Background(), cfg, logs)
	if err == nil {
		t.Fatal("serve started without its database")
	}
	if strings.Contains(err.Error(), pgPassword) || strings.Contains(logs.String(), pgPassword) {
		t.Fatalf("the password appears in the error or logs: %v\n%s", err, logs)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %q does not say which database", err)
	}
}

// TestPostgresURLSchemes: both URL schemes select PostgreSQL, anything else
// stays a SQLite file, and --db-max-conns must not be negative.
func TestPostgresURLSchemes(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.dbPath = strings.Replace(pgtest.NewDatabase(t), "postgres://", "postgresql://", 1)
	cfg.dbMaxConns = 3
	ts := mustServe(t, cfg)
	ts.stop()
	if !strings.Contains(ts.logs.String(), `"backend":"postgres"`) {
		t.Fatalf("a postgresql:// URL did not open PostgreSQL:\n%s", ts.logs)
	}

	sqliteCfg := defaultTestConfig(t)
	ts = mustServe(t, sqliteCfg)
	ts.stop()
	if !strings.Contains(ts.logs.String(), `"backend":"sqlite"`) {
		t.Fatalf("a file path did not open SQLite:\n%s", ts.logs)
	}

	bad := defaultTestConfig(t)
	bad.dbMaxConns = -1
	var usage usageError
	if err := serve(context.Background(), bad, &syncBuffer{}); !errors.As(err, &usage) {
		t.Fatalf("--db-max-conns -1: %v, want a usage error", err)
	}
}

// TestPostgresLeaderMetrics: of two replicas on one database, exactly one
// reports calsync_leader 1 and the inbox gauges (the cluster's inbox,
// reported once); when it stops, the other takes over both.
func TestPostgresLeaderMetrics(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var replicas []*testServer
	for i := range 2 {
		cfg := defaultTestConfig(t)
		cfg.dbPath, cfg.dbMaxConns, cfg.claimTTL = url, 4, time.Second
		cfg.replicaID = fmt.Sprint("replica-", i)
		replicas = append(replicas, mustServe(t, cfg))
	}
	// leader returns the index of the only replica reporting itself
	// leader, or -1.
	leader := func(rs []*testServer) int {
		found := -1
		for i, r := range rs {
			if r == nil {
				continue
			}
			m := scrape(t, r.url("/metrics"), "")
			_, inbox := m[`calsync_inbox_pending_deliveries`]
			switch {
			case m[`calsync_leader`] == 1 && inbox && found == -1:
				found = i
			case m[`calsync_leader`] == 1 || inbox:
				return -1 // two leaders, or a follower reporting the inbox
			}
		}
		return found
	}
	var first int
	eventually(t, "one replica to lead", func() bool { first = leader(replicas); return first >= 0 })
	replicas[first].stop()
	replicas[first] = nil
	other := 1 - first
	eventually(t, "the other replica to take over", func() bool { return leader(replicas) == other })
	if got := scrape(t, replicas[other].url("/metrics"), "")[`calsync_leadership_changes_total`]; got < 1 {
		t.Errorf("calsync_leadership_changes_total = %v on the new leader", got)
	}
}

// TestClaimSettingsValidated: a claim TTL under a second (its renewals
// would come every few milliseconds, or never) and a poll interval that is
// not positive are refused at start.
func TestClaimSettingsValidated(t *testing.T) {
	for _, c := range []struct{ ttl, poll time.Duration }{
		{time.Millisecond, time.Second},
		{0, time.Second},
		{10 * time.Second, 0},
	} {
		cfg := defaultTestConfig(t)
		cfg.claimTTL, cfg.claimPollInterval = c.ttl, c.poll
		err := serve(context.Background(), cfg, io.Discard)
		var usage usageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), "--claim-") {
			t.Errorf("--claim-ttl %v, --claim-poll-interval %v: serve = %v, want a usage error", c.ttl, c.poll, err)
		}
	}
}
