package postgres_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
)

// countLeases counts the rows of the leases table.
func countLeases(t *testing.T, url string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM leases`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresPruneForgetsFinishedClaims: the rows of claims on deliveries
// that are no longer pending go when the inbox is pruned, so the leases
// table does not grow with every delivery ever claimed; claims held, or
// with pending deliveries, stay; and a claim made again after its row went
// still gets a greater token.
func TestPostgresPruneForgetsFinishedClaims(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	enqueue := func(key, dedup string) int64 {
		t.Helper()
		id, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: dedup, OrderingKey: key, Body: []byte("{}")})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	const loose = 20
	for i := range loose {
		enqueue("", "loose"+string(rune('a'+i)))
	}
	enqueue("cal_done", "done1")
	enqueue("cal_waiting", "waiting1")
	enqueue("cal_held", "held1")
	claims, err := db.ClaimPending(ctx, "a", time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(claims) != loose+3 {
		t.Fatalf("claimed %d, want %d", len(claims), loose+3)
	}
	var deadLoose store.Claim
	for _, c := range claims {
		if c.OrderingKey == "cal_held" {
			continue // Held on: its row must stay.
		}
		if c.OrderingKey != "cal_waiting" {
			ds, err := db.ClaimedDeliveries(ctx, c, 0, 10)
			if err != nil || len(ds) != 1 {
				t.Fatalf("ClaimedDeliveries(%s): %v, %v", c.Name, ds, err)
			}
			state := calsyncv1.DeliveryState_DELIVERY_STATE_DONE
			if deadLoose.Token == 0 && c.OrderingKey == "" {
				state, deadLoose = calsyncv1.DeliveryState_DELIVERY_STATE_DEAD, c
			}
			err = db.Update(ctx, func(tx store.Tx) error {
				if err := tx.(store.LeaseTx).CheckLease(ctx, c.Lease); err != nil {
					return err
				}
				return tx.FinishDelivery(ctx, ds[0].ID, state, "")
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := db.ReleaseLease(ctx, c.Lease); err != nil {
			t.Fatal(err)
		}
	}
	if n := countLeases(t, url); n != loose+3 {
		t.Fatalf("%d lease rows before pruning, want %d", n, loose+3)
	}
	if _, err := db.PruneDeliveries(ctx, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	// Left: cal_held (held) and cal_waiting (free, with a pending delivery).
	if n := countLeases(t, url); n != 2 {
		t.Fatalf("%d lease rows after pruning, want 2", n)
	}
	// The dead delivery retried is claimed again with a greater token.
	if _, err := db.RetryDelivery(ctx, deadLoose.DeliveryID); err != nil {
		t.Fatal(err)
	}
	again, err := db.ClaimPending(ctx, "b", time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range again {
		if c.DeliveryID == deadLoose.DeliveryID {
			found = true
			if c.Token <= deadLoose.Token {
				t.Fatalf("the claim made again has token %d, not greater than %d", c.Token, deadLoose.Token)
			}
		}
	}
	if !found {
		t.Fatalf("the retried delivery %d was not claimed again: %+v", deadLoose.DeliveryID, again)
	}
}

// TestPostgresLeasesUnavailable: while PostgreSQL is down, the lease,
// claim and rate-limit calls fail with store.ErrUnavailable; once it is
// back they succeed without reopening the store.
func TestPostgresLeasesUnavailable(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "d", OrderingKey: "cal_a", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	claims, err := db.ClaimPending(ctx, "a", time.Hour, 10)
	if err != nil || len(claims) != 1 {
		t.Fatalf("ClaimPending: %v, %v", claims, err)
	}
	leader, _, err := db.AcquireLease(ctx, "leader", "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := pgtest.Shared(t)
	if err := srv.Halt(); err != nil {
		t.Fatalf("halt: %v", err)
	}
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	calls := map[string]func() error{
		"AcquireLease": func() error { _, _, err := db.AcquireLease(ctx, "leader", "a", time.Hour); return err },
		"RenewLease":   func() error { _, err := db.RenewLease(ctx, leader, time.Hour); return err },
		"ClaimPending": func() error { _, err := db.ClaimPending(ctx, "a", time.Hour, 10); return err },
		"ClaimedDeliveries": func() error {
			_, err := db.ClaimedDeliveries(ctx, claims[0], 0, 10)
			return err
		},
		"CheckLease": func() error {
			return db.Update(ctx, func(tx store.Tx) error { return tx.(store.LeaseTx).CheckLease(ctx, leader) })
		},
		"TakeToken": func() error { _, err := db.TakeToken(ctx, "recall", time.Second, 5); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while PostgreSQL is down: %v, want store.ErrUnavailable", name, err)
		}
	}
	if err := srv.Resume(); err != nil {
		t.Fatalf("resume: %v", err)
	}
	resumed = true
	deadline := time.Now().Add(10 * time.Second)
	for db.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Ping still fails 10s after PostgreSQL came back: %v", db.Ping(ctx))
		}
	}
	for name, call := range calls {
		// The pool drops the connections the outage cut as they fail.
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; {
			if err = call(); err == nil || !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("%s once PostgreSQL is back: %v", name, err)
		}
	}
	// The lease and the claim outlived the outage.
	if _, err := db.ClaimedDeliveries(ctx, claims[0], 0, 10); err != nil {
		t.Errorf("the claim after the outage: %v", err)
	}
}

// TestPostgresLeaseArguments: malformed calls fail with
// store.ErrInvalidArgument and change nothing; in particular no lease can
// take the name of an inbox claim.
func TestPostgresLeaseArguments(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "d", OrderingKey: "cal_a", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"AcquireLease of a claim's name": func() error {
			_, _, err := db.AcquireLease(ctx, "key:cal_a", "a", time.Hour)
			return err
		},
		"AcquireLease of a delivery claim's name": func() error {
			_, _, err := db.AcquireLease(ctx, "delivery:1", "a", time.Hour)
			return err
		},
		"AcquireLease without an owner": func() error { _, _, err := db.AcquireLease(ctx, "leader", "", time.Hour); return err },
		"AcquireLease without a ttl":    func() error { _, _, err := db.AcquireLease(ctx, "leader", "a", 0); return err },
		"RenewLease without a name": func() error {
			_, err := db.RenewLease(ctx, store.Lease{Owner: "a", Token: 1}, time.Hour)
			return err
		},
		"ClaimPending with limit 0": func() error { _, err := db.ClaimPending(ctx, "a", time.Hour, 0); return err },
		"ClaimPending without an owner": func() error {
			_, err := db.ClaimPending(ctx, "", time.Hour, 10)
			return err
		},
		"ClaimedDeliveries of a claim whose name is not its key's": func() error {
			_, err := db.ClaimedDeliveries(ctx, store.Claim{Lease: store.Lease{Name: "leader", Owner: "a", Token: 1}, OrderingKey: "cal_a"}, 0, 10)
			return err
		},
		"TakeToken with burst 0":      func() error { _, err := db.TakeToken(ctx, "recall", time.Second, 0); return err },
		"TakeToken without interval":  func() error { _, err := db.TakeToken(ctx, "recall", 0, 5); return err },
		"TakeToken with a huge burst": func() error { _, err := db.TakeToken(ctx, "recall", time.Hour, math.MaxInt); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("%s: %v, want store.ErrInvalidArgument", name, err)
		}
	}
	// The key is still free for a claim.
	claims, err := db.ClaimPending(ctx, "a", time.Hour, 10)
	if err != nil || len(claims) != 1 || claims[0].OrderingKey != "cal_a" || claims[0].Name != "key:cal_a" {
		t.Fatalf("ClaimPending after the refused calls: %+v, %v", claims, err)
	}
}
