package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
)

// watchClient opens a WatchEvents stream on the calsync at addr and reads
// its first bookmark, after which it is live.
func watchClient(t *testing.T, ctx context.Context, addr string, req *calsyncv1.WatchEventsRequest) calsyncv1.CalendarService_WatchEventsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetBookmark() == nil {
		t.Fatalf("watch on %s: first message %v, %v; want a bookmark", addr, resp, err)
	}
	return stream
}

// nextEventChange returns the stream's next change of an event, skipping
// bookmarks and calendar changes (the first webhook creates the calendar).
func nextEventChange(t *testing.T, stream calsyncv1.CalendarService_WatchEventsClient) *calsyncv1.Change {
	t.Helper()
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if c := resp.GetChange(); c.GetEvent() != nil {
			return c
		}
	}
}

// TestPostgresReplicasFanOut runs two real `calsync serve` processes on one
// PostgreSQL, each polling the change log only once an hour, so that only
// the NOTIFY hints can bring one replica's changes to the other's watchers
// in time: postpress webhooks sent to replica A reach a WatchEvents stream
// on replica B, each once and in order; a cursor handed out by A resumes
// on B; and both replicas' watch lag goes back to 0.
func TestPostgresReplicasFanOut(t *testing.T) {
	url := pgtest.NewDatabase(t)
	env := []string{"CALSYNC_DB=" + url, "CALSYNC_DB_MAX_CONNS=4", "CALSYNC_DB_POLL_INTERVAL=1h",
		"CALSYNC_POSTPRESS_AUTH_SECRETS=s3cret"}
	a, b := startBinary(t, env), startBinary(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Both replicas listen before the first webhook.
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	eventually(t, "both replicas listening", func() bool {
		var n int
		err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query ILIKE 'LISTEN %'`).Scan(&n)
		return err == nil && n == 2
	})

	onA := watchClient(t, ctx, a.grpcAddr, &calsyncv1.WatchEventsRequest{})
	onB := watchClient(t, ctx, b.grpcAddr, &calsyncv1.WatchEventsRequest{})
	const n = 30
	var aCursors []string
	lat := make([]time.Duration, 0, n)
	for i := range n {
		id := fmt.Sprintf("replevt%d", i)
		body := postpressEventBody("calendar_event_created", id, "Planning", time.Now().UTC())
		sent := time.Now()
		code, resp := httpDo(t, http.MethodPost, a.url("/v1/webhooks/postpress"), body, http.Header{"Postpress-Auth": {"s3cret"}})
		if code != http.StatusOK {
			t.Fatalf("webhook %d to A = %d: %s", i, code, resp)
		}
		got := nextEventChange(t, onB)
		lat = append(lat, time.Since(sent))
		if got.GetEvent().GetProviderEventId() != id {
			t.Fatalf("change %d on B is for %q, want %q", i, got.GetEvent().GetProviderEventId(), id)
		}
		mine := nextEventChange(t, onA)
		if mine.GetCursor() != got.GetCursor() {
			t.Fatalf("change %d: cursor %s on A, %s on B", i, mine.GetCursor(), got.GetCursor())
		}
		aCursors = append(aCursors, mine.GetCursor())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("webhook sent to A -> change received on B's stream, %d sequential webhooks: p50 %v, p90 %v, max %v",
		n, lat[n/2], lat[n*9/10], lat[n-1])

	// A cursor from A resumes on B: B sends the changes after it, in order.
	const from = n / 2
	resumed := watchClient(t, ctx, b.grpcAddr, &calsyncv1.WatchEventsRequest{AfterCursor: aCursors[from]})
	for i := from + 1; i < n; i++ {
		c := nextEventChange(t, resumed)
		if want := fmt.Sprintf("replevt%d", i); c.GetEvent().GetProviderEventId() != want || c.GetCursor() != aCursors[i] {
			t.Fatalf("resumed on B: change %s for %q, want %s for %q",
				c.GetCursor(), c.GetEvent().GetProviderEventId(), aCursors[i], want)
		}
	}

	for name, p := range map[string]*process{"A": a, "B": b} {
		eventually(t, "replica "+name+" caught up", func() bool {
			lag, ok := scrape(t, p.url("/metrics"), "")["calsync_watch_lag_changes"]
			return ok && lag == 0
		})
	}
	a.stop(t)
	b.stop(t)
}
