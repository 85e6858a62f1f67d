package sqlite

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// A change whose events the transaction wrote or read carries their
// encodings as they are (see tx.encoded): the change log must hold the
// same change EncodeChange makes of the events, byte for byte, whether the
// previous version was read from the writer's cache, from the table, or
// written in the same transaction.
func TestChangesCarryTheEventsAsWrittenAndRead(t *testing.T) {
	ctx := context.Background()
	db := openDurable(t)
	defer db.Close()

	var want [][]byte
	appendChange := func(stx store.Tx, c *calsyncv1.Change) error {
		data, err := rowcodec.EncodeChange(c, stx.(*tx).commit)
		if err != nil {
			return err
		}
		want = append(want, data)
		_, err = stx.AppendChange(ctx, c)
		return err
	}
	created := versionedEvent("ev1", 1)
	if err := db.Update(ctx, func(stx store.Tx) error {
		if err := stx.PutEvent(ctx, created); err != nil {
			return err
		}
		return appendChange(stx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: created})
	}); err != nil {
		t.Fatal(err)
	}
	// Three updates: the previous version read from the writer's cache,
	// then from the table (the cache emptied), then written earlier in
	// the same transaction.
	update := func(stx store.Tx, version int) error {
		prev, err := stx.GetEvent(ctx, "ev1", false)
		if err != nil {
			return err
		}
		next := versionedEvent("ev1", version)
		if err := stx.PutEvent(ctx, next); err != nil {
			return err
		}
		return appendChange(stx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: next,
			PreviousEvent: prev, ChangedFields: []string{"title"}})
	}
	if err := db.Update(ctx, func(stx store.Tx) error { return update(stx, 2) }); err != nil {
		t.Fatal(err)
	}
	db.recent.forget("ev1")
	if err := db.Update(ctx, func(stx store.Tx) error { return update(stx, 3) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(stx store.Tx) error {
		if err := update(stx, 4); err != nil {
			return err
		}
		return update(stx, 5)
	}); err != nil {
		t.Fatal(err)
	}

	got, err := db.ReadChanges(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes in the log, %d appended", len(got), len(want))
	}
	for i, r := range got {
		if string(r.Change) != string(want[i]) {
			var g, w calsyncv1.Change
			proto.Unmarshal(r.Change, &g)
			proto.Unmarshal(want[i], &w)
			t.Errorf("change %d: the log holds %v\nEncodeChange makes %v", i, &g, &w)
		}
	}
}
