package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// testingProcs is GOMAXPROCS, the multiplier RunParallel applies to
// SetParallelism.
func testingProcs() int { return runtime.GOMAXPROCS(0) }
