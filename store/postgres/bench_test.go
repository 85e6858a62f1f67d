package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
)

// BenchmarkPostgresEnqueue measures durable ingestion on the private
// server: 64 concurrent callers per core enqueue ~1 KB deliveries, sharing
// transactions through group commit.
func BenchmarkPostgresEnqueue(b *testing.B) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(b), postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	body := make([]byte, 1024)
	var seq atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d := store.NewDelivery{Provider: "postpress", DedupKey: fmt.Sprint(seq.Add(1)), Body: body}
			if _, _, err := db.Enqueue(ctx, d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkPostgresEnqueueApply measures durable ingestion with the
// processing done in the same group commit (postpress at intake): each
// ~1 KB delivery stores one event and appends its change, one calendar per
// 16 deliveries (so most of a batch's keys differ, as with many calendars).
func BenchmarkPostgresEnqueueApply(b *testing.B) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(b), postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	body := make([]byte, 1024)
	var seq atomic.Int64
	start := time.Now().Add(time.Hour).Truncate(time.Hour)
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			cal := fmt.Sprint("cal_", n/16)
			d := store.NewDelivery{Provider: "postpress", DedupKey: fmt.Sprint(n), OrderingKey: cal, Body: body}
			ev := &calsyncv1.CalendarEvent{Id: fmt.Sprint("evt_", n), CalendarId: cal, Provider: "postpress",
				StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Hour))}
			apply := func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
				if err := tx.PutEvent(ctx, ev); err != nil {
					return 0, "", err
				}
				_, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev})
				return calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", err
			}
			if _, err := db.EnqueueApply(ctx, d, apply); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}
