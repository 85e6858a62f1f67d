package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/store"
)

// A statement run again in the same transaction reuses its binding to the
// transaction: what a repeated statement costs in allocations is its
// arguments and result, not a fresh binding each time. Both the reuse and
// the results are checked, inside one transaction and across several.
func TestRepeatedStatementsInOneTransaction(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "b.db"), Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seq := 0
	put := func(n int) func() {
		return func() {
			err := db.Update(ctx, func(tx store.Tx) error {
				for range n {
					seq++
					if err := tx.PutSyncState(ctx, store.SyncState{CalendarID: fmt.Sprintf("c%d", seq%7)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	put(2)() // prepares the statement for the transactions that follow
	const extra = 40
	one := testing.AllocsPerRun(20, put(1))
	many := testing.AllocsPerRun(20, put(1+extra))
	perCall := (many - one) / extra
	t.Logf("allocations: %.1f for one statement, %.1f for each more", one, perCall)
	// A PutSyncState costs 8 allocations (its arguments, the driver's
	// binding and its result); binding the statement to the transaction
	// anew on every call cost 3 more.
	if perCall > 9 {
		t.Errorf("each further statement in a transaction allocates %.1f times, want at most 9", perCall)
	}
	err = db.Update(ctx, func(tx store.Tx) error {
		for i := range 7 {
			if _, err := tx.GetSyncState(ctx, fmt.Sprintf("c%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a sync state written by a reused statement is missing: %v", err)
	}
}
