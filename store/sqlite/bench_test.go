package sqlite_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// BenchmarkEnqueue measures durable ingestion: about 64 concurrent callers
// enqueue distinct deliveries with synchronous=FULL on a real file, with
// group commit (the default batch) and without it (one transaction, hence
// one fsync, per delivery).
func BenchmarkEnqueue(b *testing.B) {
	body := []byte(`{"event":"calendar.sync_events","data":{"calendar_id":"` + strings.Repeat("x", 150) + `"}}`)
	for _, maxBatch := range []int{sqlite.DefaultMaxBatch, 1} {
		b.Run(fmt.Sprintf("MaxBatch=%d", maxBatch), func(b *testing.B) {
			db := mustOpen(b, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{MaxBatch: maxBatch, Synchronous: "FULL"})
			ctx := context.Background()
			var n atomic.Int64
			b.SetParallelism(max(1, 64/testingProcs()))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _, err := db.Enqueue(ctx, store.NewDelivery{
						Provider:    "postpress",
						DedupKey:    fmt.Sprint("hash-", n.Add(1)),
						EventType:   "calendar.sync_events",
						OrderingKey: "cal_a",
						Body:        body,
						ReceiveTime: time.Now(),
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkEnqueueApply measures the inbox commit of deliveries applied
// in their own transaction (store.ApplyingInbox): about 64 concurrent
// callers, synchronous=FULL on a real file, each delivery storing an
// event of about 1 KB and appending its change. apply=none enqueues the
// same deliveries without applying them, so the difference is the apply's
// cost. apply=new-event stores a new event per delivery (see distinct
// below), the shape of a stream of distinct webhooks; apply=update-event
// reads the event first and keeps its calendar and start, the shape of
// a meeting's edits; apply=new-event,read-first is apply=new-event with the
// read before the write that the processor makes, its event named to the
// store (store.NewDelivery.ApplyEventID) as the postpress intake names it;
// apply=event,callers=4 is apply=event with four deliveries in flight
// instead of 64. It reports process CPU and allocations per delivery.
func BenchmarkEnqueueApply(b *testing.B) {
	body := []byte(`{"event":"calendar_event_updated","data":{"calendar_id":"` + strings.Repeat("x", 800) + `"}}`)
	for _, c := range []struct {
		name      string
		withApply bool
		// distinct gives every delivery an event of its own, with a
		// scattered id and start time, as distinct webhooks do: the
		// tables and their indexes grow with b.N, and each delivery
		// lands on index pages of its own. Otherwise 1,000 events are
		// updated over and over and their pages stay hot.
		distinct bool
		// update reads each event before writing it, as the processor
		// does, and keeps its calendar and start: a new version of a
		// meeting that did not move.
		update bool
		// callers is how many deliveries are in flight (0: 64); a few
		// make the small batches of a moderate load.
		callers int
		// readFirst reads each event before writing it, the way the
		// processor applies a webhook, and names it in the delivery.
		readFirst bool
	}{{"apply=none", false, false, false, 0, false}, {"apply=event", true, false, false, 0, false},
		{"apply=new-event", true, true, false, 0, false}, {"apply=new-event,read-first", true, true, false, 0, true},
		{"apply=update-event", true, false, true, 0, false}, {"apply=event,callers=4", true, false, false, 4, false}} {
		withApply := c.withApply
		b.Run(c.name, func(b *testing.B) {
			// commits counts the group commits, so the figures can be read
			// against the batch size they came from.
			var commits atomic.Int64
			db := mustOpen(b, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{Synchronous: "FULL",
				OnBatch: func(int, time.Duration) { commits.Add(1) }})
			ctx := context.Background()
			var n atomic.Int64
			callers := cmp.Or(c.callers, 64)
			b.SetParallelism(max(1, callers/testingProcs()))
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cputime.Process()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					d := store.NewDelivery{
						Provider:    "postpress",
						DedupKey:    fmt.Sprint("hash-", i),
						EventType:   "calendar_event_updated",
						OrderingKey: fmt.Sprint("cal_", i%100),
						Body:        body,
						ReceiveTime: time.Now(),
					}
					if !withApply {
						if _, _, err := db.Enqueue(ctx, d); err != nil {
							b.Error(err)
							return
						}
						continue
					}
					id, start := fmt.Sprint("evt_", i%1000), time.Now()
					if c.update {
						start = time.Date(2030, 2, 1+int(i%1000)%27, 10, 0, 0, 0, time.UTC)
					}
					if c.distinct {
						h := fnv.New64a()
						fmt.Fprint(h, i)
						id = fmt.Sprintf("evt_%016x", h.Sum64())
						start = start.Add(time.Duration(h.Sum64()%(90*24*3600)) * time.Second)
						d.DedupKey = fmt.Sprintf("%016x", h.Sum64())
					}
					e := sqlite.BenchEvent(id, d.OrderingKey, start)
					if c.readFirst {
						d.ApplyEventID = id
					}
					_, err := db.EnqueueApply(ctx, d, func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
						if c.update || c.readFirst {
							if _, err := tx.GetEvent(ctx, e.GetId(), false); err != nil && !errors.Is(err, store.ErrNotFound) {
								return 0, "", err
							}
						}
						if err := tx.PutEvent(ctx, e); err != nil {
							return 0, "", err
						}
						_, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: e})
						return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", err
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/float64(b.N), "cpu-µs/delivery")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
			b.ReportMetric(float64(b.N)/float64(max(1, commits.Load())), "deliveries/commit")
		})
	}
}

// BenchmarkReadChanges measures catch-up reads: a watcher reading a large
// change log from its start in pages of 1,000.
func BenchmarkReadChanges(b *testing.B) {
	const total, page = 50_000, 1000
	db := mustOpen(b, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{Synchronous: "NORMAL"})
	ctx := context.Background()
	for i := 0; i < total; i += page {
		err := db.Update(ctx, func(tx store.Tx) error {
			for j := range page {
				e := &calsyncv1.CalendarEvent{
					Id:         fmt.Sprintf("evt_%06d", i+j),
					CalendarId: "cal_a",
					Provider:   "recall",
					Title:      "Weekly sync",
					StartTime:  timestamppb.Now(),
					EndTime:    timestamppb.Now(),
					MeetingUrl: "https://meet.google.com/abc-defg-hij",
					Attendees:  []*calsyncv1.Attendee{{Email: "a@example.com"}, {Email: "b@example.com"}},
				}
				if _, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	read := 0
	for b.Loop() {
		for after := store.Cursor(0); ; {
			recs, err := db.ReadChanges(ctx, after, page)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			read += len(recs)
			after = recs[len(recs)-1].Cursor
		}
	}
	if read != total*b.N {
		b.Fatalf("read %d changes, want %d", read, total*b.N)
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "changes/s")
}

// BenchmarkPointReads measures the one-statement reads the processor and
// the API run most: an event by id, and the processor's scan for pending
// deliveries finding one new delivery. It reports process CPU per read.
func BenchmarkPointReads(b *testing.B) {
	db := mustOpen(b, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{Synchronous: "NORMAL"})
	ctx := context.Background()
	err := db.Update(ctx, func(tx store.Tx) error {
		for i := range 1000 {
			e := &calsyncv1.CalendarEvent{
				Id: fmt.Sprintf("evt_%04d", i), CalendarId: "cal_a", Provider: "recall", Title: "Weekly sync",
				StartTime: timestamppb.Now(), EndTime: timestamppb.Now(),
			}
			if err := tx.PutEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	last, _, err := db.Enqueue(ctx, store.NewDelivery{Provider: "recall", DedupKey: "k", EventType: "calendar.sync_events",
		OrderingKey: "cal_a", Body: []byte(`{"event":"calendar.sync_events"}`), ReceiveTime: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	reads := map[string]func(i int) error{
		"get-event": func(i int) error {
			_, err := db.GetEvent(ctx, fmt.Sprintf("evt_%04d", i%1000), false)
			return err
		},
		"pending-scan": func(int) error {
			ds, err := db.PendingDeliveries(ctx, last-1, 500)
			if err == nil && len(ds) != 1 {
				err = fmt.Errorf("scan found %d deliveries, want 1", len(ds))
			}
			return err
		},
	}
	for _, name := range []string{"get-event", "pending-scan"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cputime.Process()
			i := 0
			for b.Loop() {
				if err := reads[name](i); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64((cputime.Process()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/read")
		})
	}
}

// testingProcs is GOMAXPROCS, the multiplier RunParallel applies to
// SetParallelism.
func testingProcs() int { return runtime.GOMAXPROCS(0) }
