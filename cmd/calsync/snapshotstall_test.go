package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// Watchers that ask for an initial snapshot and then stop reading hold no
// database resource while the server waits on them: webhooks are still
// processed, on SQLite and on PostgreSQL, and on SQLite a TRUNCATE
// checkpoint of the WAL, which waits for every reader of the WAL, completes.
func TestStalledSnapshotReadersHoldNoDatabase(t *testing.T) {
	onBackends(t, testStalledSnapshotReadersHoldNoDatabase)
}

func testStalledSnapshotReadersHoldNoDatabase(t *testing.T, be backend) {
	cfg := defaultTestConfig(t)
	cfg.postpressAuthSecrets = postpressSecret
	be.use(t)(&cfg)
	// On PostgreSQL, as many stalled watchers as the pool has
	// connections: a snapshot that kept its connection would starve the
	// processing of webhooks.
	cfg.dbMaxConns = 4
	seedEvents(t, be, cfg.dbPath, 3000)
	ts := mustServe(t, cfg)

	// As many stalled watchers as the server has pooled read connections
	// on a small machine, each on its own connection with HTTP/2 windows
	// that stay small, so the server soon waits on flow control.
	const watchers = 4
	for i := range watchers {
		conn, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(context.Background(),
			&calsyncv1.WatchEventsRequest{InitialSnapshot: true})
		if err != nil {
			t.Fatal(err)
		}
		// One change read: the snapshot is under way. Then nothing more.
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
	}

	code, body := postWebhook(t, ts, "postpress", readTestdata(t, "postpress_created.json"), ppAuth())
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	id := decodeAnswer(t, body).DeliveryID
	deliveries := calsyncv1.NewDeliveryServiceClient(ts.conn)
	eventually(t, "the webhook to be processed while snapshot readers stall", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := deliveries.ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{})
		if err != nil {
			return false
		}
		for _, d := range resp.GetDeliveries() {
			if d.GetId() == id && d.GetState() == calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
				return true
			}
		}
		return false
	})
	if be != sqliteBackend {
		return // The WAL checkpoint below is SQLite's.
	}

	raw, err := sql.Open("sqlite", "file:"+cfg.dbPath+"?_pragma=busy_timeout(200)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var busy, logFrames, checkpointed int
	eventually(t, "a TRUNCATE checkpoint to complete while snapshot readers stall", func() bool {
		err := raw.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &checkpointed)
		return err == nil && busy == 0
	})
}

// seedEvents stores n events of about half a kilobyte in the store of be at
// path (a --db value), before the server opens it.
func seedEvents(t *testing.T, be backend, path string, n int) {
	t.Helper()
	ctx := context.Background()
	db := be.openAt(t, path)
	defer db.Close()
	pad := strings.Repeat("agenda ", 70)
	err := db.Update(ctx, func(tx store.Tx) error {
		for i := range n {
			e := &calsyncv1.CalendarEvent{Id: fmt.Sprintf("evt_seed%05d", i), CalendarId: "cal_seed", Provider: "postpress",
				Title: fmt.Sprintf("Seeded %d", i), Description: pad}
			if err := tx.PutEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
