package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
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

// Reading an event back decodes it from the row the driver read, without
// copying its columns once more: reading an event with a large raw payload
// allocates about the driver's copy and the decoded payload, not a third
// copy.
func TestGetEventDecodesWithoutCopyingTheRow(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "g.db"), Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const size = 1 << 20
	raw, err := structpb.NewStruct(map[string]any{"notes": strings.Repeat("n", size)})
	if err != nil {
		t.Fatal(err)
	}
	ev := &calsyncv1.CalendarEvent{Id: "e1", CalendarId: "c1", Provider: "postpress", Title: "Standup", Raw: raw}
	if err := db.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, ev) }); err != nil {
		t.Fatal(err)
	}
	var got *calsyncv1.CalendarEvent
	read := func() {
		if got, err = db.GetEvent(ctx, "e1", true); err != nil {
			t.Fatal(err)
		}
	}
	read()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	read()
	runtime.ReadMemStats(&after)
	if got.GetRaw().GetFields()["notes"].GetStringValue() != strings.Repeat("n", size) {
		t.Fatal("the raw payload read back differs from the one stored")
	}
	// The driver's copy of the row and the decoded string: 2 MiB. A copy
	// of the row by database/sql made it 3.
	if n := after.TotalAlloc - before.TotalAlloc; n > 2*size+size/2 {
		t.Errorf("GetEvent of a %d-byte payload allocated %d bytes, want at most %d", size, n, 2*size+size/2)
	}
}

// Storing an event does not sort its raw payload's keys: the events table
// is only decoded, so the payload's objects are written in map order, which
// spares the sorted copy of each object's keys.
func TestPutEventDoesNotSortPayloadKeys(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 200 small objects, as a payload's attendee list has.
	const objects = 200
	list := make([]any, objects)
	for i := range list {
		list[i] = map[string]any{"email": fmt.Sprintf("a%d@example.com", i), "status": "accepted"}
	}
	raw, err := structpb.NewStruct(map[string]any{"attendees": list})
	if err != nil {
		t.Fatal(err)
	}
	ev := &calsyncv1.CalendarEvent{Id: "e1", CalendarId: "c1", Provider: "postpress", Title: "Standup", Raw: raw}
	put := func() {
		if err := db.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, ev) }); err != nil {
			t.Fatal(err)
		}
	}
	put()
	n := testing.AllocsPerRun(5, put)
	t.Logf("%v allocations to store an event with %d objects in its payload", n, objects)
	// Encoding and checking an object cost about 4 allocations; sorting
	// its keys (a slice of them, and a copy of each) cost 4 more.
	if n > 5*objects {
		t.Errorf("storing an event with %d objects in its payload allocates %v times, want at most %d", objects, n, 5*objects)
	}
	got, err := db.GetEvent(ctx, "e1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, ev) {
		t.Error("the event read back differs from the one stored")
	}
}
