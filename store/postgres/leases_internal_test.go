package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// TestClaimPendingLargeInbox: over an inbox that retains many finished
// deliveries and has many pending ones in few keys, ClaimPending reads no
// table in full: its plan reaches deliveries through indexes only (the
// skip scan over the pending index), and it claims every due key.
func TestClaimPendingLargeInbox(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const finished, keys, perKey = 100_000, 50, 200
	now := rowcodec.Nanos(time.Now())
	if _, err := db.pool.Exec(ctx, `INSERT INTO deliveries (provider, dedup_key, message_id, event_type, ordering_key,
			body, state, receive_ns, process_ns)
		SELECT 'recall', convert_to('f' || i, 'UTF8'), '', '', convert_to('cal_' || (i % 1000), 'UTF8'), '{}', 2, $1, $1
		FROM generate_series(1, $2) i`, now, finished); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO deliveries (provider, dedup_key, message_id, event_type, ordering_key,
			body, state, receive_ns, next_attempt_ns)
		SELECT 'recall', convert_to('p' || i, 'UTF8'), '', '', convert_to('cal_' || (i % $3), 'UTF8'), '{}', 1, $1, $1
		FROM generate_series(1, $2) i`, now, keys*perKey, keys); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE deliveries`); err != nil {
		t.Fatal(err)
	}
	rows, err := db.pool.Query(ctx, `EXPLAIN `+claimPendingSQL, []byte("a"), int64(1e6), rowcodec.Nanos(time.Now()), 10)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if strings.Contains(plan, "Seq Scan on deliveries") {
		t.Fatalf("ClaimPending reads the whole inbox:\n%s", plan)
	}
	claimed := 0
	var took []time.Duration
	for {
		began := time.Now()
		cs, err := db.ClaimPending(ctx, "a", time.Hour, 10)
		took = append(took, time.Since(began))
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			break
		}
		claimed += len(cs)
	}
	if claimed != keys {
		t.Fatalf("claimed %d keys, want %d", claimed, keys)
	}
	t.Logf("ClaimPending over %d finished and %d pending deliveries in %d keys: %v per call of 10",
		finished, keys*perKey, keys, took)
}
