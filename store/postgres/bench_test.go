package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

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
