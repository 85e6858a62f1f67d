package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// snapshotBoundsCases check that a Snapshot's callback, which waits on a
// watcher, holds nothing of the database while it waits.
var snapshotBoundsCases = []testCase{
	{"BlockedCallbacksHoldNothing", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// Enough events, and big enough, for a backend that spools to go
		// past memory.
		const events, snapshots = 2000, 16
		pad := strings.Repeat("x", 1000)
		var want []string
		var msgs []any
		for i := range events {
			e := event(fmt.Sprintf("evt_%04d", i), "cal_a", at(time.Duration(i)*time.Minute), at(time.Duration(i+1)*time.Minute))
			e.Description = pad
			msgs = append(msgs, e)
			want = append(want, e.GetId())
		}
		mustPut(t, h.s, msgs...)
		head := mustAppend(t, h.s, created(msgs[0].(*calsyncv1.CalendarEvent)))[0]

		entered, release := make(chan struct{}, snapshots), make(chan struct{})
		type result struct {
			cursor store.Cursor
			ids    []string
			err    error
		}
		results := make(chan result, snapshots)
		var wg sync.WaitGroup
		for range snapshots {
			wg.Go(func() {
				var r result
				r.cursor, r.err = h.s.Snapshot(ctx, store.SnapshotFilter{}, func(e *calsyncv1.CalendarEvent) error {
					if len(r.ids) == 0 {
						entered <- struct{}{}
						<-release
					}
					r.ids = append(r.ids, e.GetId())
					return nil
				})
				results <- r
			})
		}
		defer wg.Wait()
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		deadline := time.After(20 * time.Second)
		for i := range snapshots {
			select {
			case <-entered:
			case <-deadline:
				t.Fatalf("only %d of %d snapshots reached their callback: the blocked ones hold what the others need", i, snapshots)
			}
		}

		// Every snapshot is blocked in its callback: reads and writes go on.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := h.s.GetEvent(cctx, "evt_0001", false); err != nil {
			t.Fatalf("GetEvent while snapshots are blocked: %v", err)
		}
		if _, err := h.s.ListEvents(cctx, store.EventQuery{Limit: 10}); err != nil {
			t.Fatalf("ListEvents while snapshots are blocked: %v", err)
		}
		later := event("evt_later", "cal_b", at(0), at(time.Hour))
		err := h.s.Update(cctx, func(tx store.Tx) error {
			if err := tx.PutEvent(cctx, later); err != nil {
				return err
			}
			_, err := tx.AppendChange(cctx, created(later))
			return err
		})
		must(t, "Update while snapshots are blocked", err)
		if _, err := h.s.ReadChanges(cctx, 0, 10); err != nil {
			t.Fatalf("ReadChanges while snapshots are blocked: %v", err)
		}

		close(release)
		released = true
		for range snapshots {
			r := <-results
			must(t, "Snapshot", r.err)
			// All read at one instant: before the later commit.
			if r.cursor != head {
				t.Fatalf("Snapshot cursor %d, want the head %d of its instant", r.cursor, head)
			}
			diffIDs(t, "snapshot", want, r.ids)
		}
	}},
}
