package sqlite

import (
	"context"
	"strings"
	"testing"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// The inbox's reads of deliveries that are not DONE go through the partial
// index of unfinished deliveries (migration 0005), which SQLite takes only
// when the query holds the index's own WHERE term: a query that lost it
// would scan the whole inbox. A listing of DONE deliveries reads the table
// newest first, which needs no sort.
func TestUnfinishedDeliveriesUseTheirIndex(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})

	var def string
	if err := db.r.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = 'deliveries_unfinished_by_state'`).Scan(&def); err != nil {
		t.Fatalf("the index of unfinished deliveries: %v", err)
	}
	if !strings.HasSuffix(def, "WHERE "+notDone) {
		t.Fatalf("the index is %q; the queries say %q", def, notDone)
	}

	plan := func(query string, args ...any) string {
		t.Helper()
		rows, err := db.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var steps []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			steps = append(steps, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(steps, "; ")
	}
	const index = "INDEX deliveries_unfinished_by_state"
	list := func(q store.DeliveryQuery) string {
		query, args := listDeliveriesQuery(q)
		return plan(query, args...)
	}
	dead := calsyncv1.DeliveryState_DELIVERY_STATE_DEAD
	for name, got := range map[string]string{
		"pending deliveries":         plan(pendingDeliveriesQuery, statePending, 0, 10),
		"dead count":                 plan(deadCountQuery, stateDead),
		"dead listing":               list(store.DeliveryQuery{State: dead, Limit: 10}),
		"dead listing, before an id": list(store.DeliveryQuery{State: dead, BeforeID: 100, Limit: 10}),
		"ignored listing":            list(store.DeliveryQuery{State: calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED}),
	} {
		if !strings.Contains(got, index) || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("%s: plan %q, want the index of unfinished deliveries and no sort", name, got)
		}
	}
	doneState := calsyncv1.DeliveryState_DELIVERY_STATE_DONE
	for name, q := range map[string]store.DeliveryQuery{
		"done listing":               {State: doneState, Limit: 10},
		"done listing, before an id": {State: doneState, BeforeID: 100, Limit: 10},
		"done listing of a provider": {State: doneState, Provider: "postpress", Limit: 10},
	} {
		if got := list(q); strings.Contains(got, index) || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("%s: plan %q, want the table (or the provider's index) newest first", name, got)
		}
	}
}
