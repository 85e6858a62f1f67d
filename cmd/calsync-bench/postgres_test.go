package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pgbench15Output is what pgbench 15 prints for a custom script.
const pgbench15Output = `transaction type: pgbench-insert.sql
scaling factor: 1
query mode: simple
number of clients: 64
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 81234
number of failed transactions: 0 (0.000%)
latency average = 7.871 ms
initial connection time = 41.322 ms
tps = 8130.456789 (without initial connection time)
`

func TestParsePGBench(t *testing.T) {
	tx, tps, lat, err := parsePGBench(pgbench15Output)
	if err != nil || tx != 81234 || tps != 8130.456789 || lat != 7.871 {
		t.Errorf("parsePGBench = %d, %v, %v, %v; want 81234, 8130.456789, 7.871, nil", tx, tps, lat, err)
	}
	if _, _, _, err := parsePGBench("pgbench: error: connection to server failed\n"); err == nil {
		t.Error("an output without a summary was accepted")
	}
	nothing := "number of clients: 64\nduration: 2 s\nnumber of transactions actually processed: 0\nnumber of failed transactions: 0 (NaN%)\n"
	if _, _, _, err := parsePGBench(nothing); err == nil || !strings.Contains(err.Error(), "no transaction") {
		t.Errorf("a run that committed nothing: err %v, want one saying so", err)
	}
}

func TestParseStat(t *testing.T) {
	// A command name may hold spaces and parentheses; utime..cstime are
	// fields 14..17, in clock ticks.
	line := "4242 (postgres: x) (y)) S 4100 4242 4242 0 -1 4194560 1 0 0 0 150 50 300 100 20 0 1 0 99 1 1 1\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 4100 || st.cpu != 2*time.Second || st.childCPU != 4*time.Second {
		t.Errorf("parseStat = %+v; want ppid 4100, cpu 2s, childCPU 4s", st)
	}
	if _, err := parseStat([]byte("4242 (short) S 1 2")); err == nil {
		t.Error("a short stat line was accepted")
	}
}

// TestSpreadPosterKeepsEachConnectionOnOneReplica checks that the load is
// spread over every replica and that a connection's webhooks, and so each
// event's versions, always go to the same one.
func TestSpreadPosterKeepsEachConnectionOnOneReplica(t *testing.T) {
	var mu sync.Mutex
	events := map[string]map[int]bool{} // event id → replicas that got it
	perReplica := make([]int, 3)
	var bases []string
	for i := range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			body := string(b)
			_, rest, _ := strings.Cut(body, `"id":"`)
			id, _, _ := strings.Cut(rest, `"`)
			mu.Lock()
			if events[id] == nil {
				events[id] = map[int]bool{}
			}
			events[id][i] = true
			perReplica[i]++
			mu.Unlock()
		}))
		t.Cleanup(srv.Close)
		bases = append(bases, srv.URL)
	}
	w := NewWorkload(12, 1)
	p := NewSpreadPoster(bases, 6)
	ctx := context.Background()
	for range 3 {
		if r := w.Run(ctx, p, LoadSpec{Conns: 6, OnePass: true}); r.Errors != 0 {
			t.Fatalf("errors: %+v", r)
		}
	}
	for i, n := range perReplica {
		if n != 12 {
			t.Errorf("replica %d got %d webhooks, want 12 (36 spread over 3)", i, n)
		}
	}
	if len(events) != 12 {
		t.Errorf("%d events sent, want 12", len(events))
	}
	for id, got := range events {
		if len(got) != 1 {
			t.Errorf("event %s went to replicas %v, want one", id, got)
		}
	}
}

// TestPGBenchOnPrivateServer runs the PostgreSQL baseline for real, briefly:
// a private server, pgbench's custom insert script, its summary read and
// the server's CPU measured.
func TestPGBenchOnPrivateServer(t *testing.T) {
	ctx := context.Background()
	pg, err := startPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := pg.srv.Dir
	defer func() {
		if err := pg.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("server directory %s left behind (%v)", dir, err)
		}
	}()
	if !strings.HasPrefix(pg.Version, "15") || !strings.Contains(pg.Settings, "fsync=on") || !strings.Contains(pg.Settings, "synchronous_commit=on") {
		t.Errorf("server %q with %q; want PostgreSQL 15, durable", pg.Version, pg.Settings)
	}
	r, err := runPGBench(ctx, pg, 4, 2, time.Second, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r.Transactions <= 0 || r.TPS <= 0 || r.LatencyAvgMS <= 0 {
		t.Errorf("pgbench result %+v: want transactions, tps and latency", r)
	}
	if r.PGCPUPerRow <= 0 {
		t.Errorf("PostgreSQL CPU not measured: %+v", r)
	}
	// Every row is logged whole: at least its payload goes to the WAL.
	if r.WAL.BytesPerOp < pgbenchRowBytes {
		t.Errorf("WAL %.0f bytes per row, want at least the row's %d", r.WAL.BytesPerOp, pgbenchRowBytes)
	}
	url, err := pg.newDatabase(ctx, "pgbench")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "host="+filepath.Clean(dir)) {
		t.Errorf("database URL %s does not use the server's Unix socket in %s", url, dir)
	}
}

// TestRecallTapsTellWhichReplicaAsked checks the failover scenario's view
// of Recall: each replica's tap forwards to the fake Recall API and records
// its event listings, so the scenario can tell the replica that holds the
// work from the one that takes it over.
func TestRecallTapsTellWhichReplicaAsked(t *testing.T) {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"results":[]}`))
	}))
	defer fake.Close()
	lg := &tapLog{arrived: make(chan struct{}, 1)}
	taps, err := newRecallTaps(fake.URL, 3, lg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range taps {
		defer tp.srv.Close()
	}
	get := func(tap int, path string) {
		resp, err := http.Get(taps[tap].srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tap %d %s: status %d", tap, path, resp.StatusCode)
		}
	}
	start := time.Now()
	get(1, "/api/v2/calendars/c1/")
	get(1, "/api/v2/calendar-events/?calendar_id=c1")
	held, ok := waitTap(context.Background(), lg, start, -1, 10*time.Second)
	if !ok || held.replica != 1 {
		t.Fatalf("first event listing from replica %d (found %v), want 1", held.replica, ok)
	}
	killed := time.Now()
	if _, ok := waitTap(context.Background(), lg, killed, 1, 50*time.Millisecond); ok {
		t.Fatal("a listing by another replica reported before any was made")
	}
	get(1, "/api/v2/calendar-events/?calendar_id=c1")
	get(2, "/api/v2/calendar-events/?calendar_id=c1")
	took, ok := waitTap(context.Background(), lg, killed, 1, 10*time.Second)
	if !ok || took.replica != 2 {
		t.Fatalf("takeover by replica %d (found %v), want 2", took.replica, ok)
	}
}
