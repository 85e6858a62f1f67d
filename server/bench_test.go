package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// BenchmarkWatchCatchUp measures one gRPC client replaying a long change
// log from its start, server and client in this process: UPDATED changes
// with their previous state, as a busy calendar's log holds, read over
// loopback and decoded in full.
func BenchmarkWatchCatchUp(b *testing.B) {
	const total, events, perTx = 100_000, 1000, 1000
	ts := mustStartServer(b, "", testWatchConfig())
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	prev := make([]*calsyncv1.CalendarEvent, events)
	for i := range prev {
		prev[i] = watchtest.Event(model.ProviderPostpress, cal, i, "version 0")
	}
	for i := 0; i < total; i += perTx {
		changes := make([]*calsyncv1.Change, 0, perTx)
		for j := i; j < i+perTx; j++ {
			k := j % events
			next := watchtest.Event(model.ProviderPostpress, cal, k, fmt.Sprintf("version %d", j/events+1))
			next.Description = "Weekly planning: agenda in the shared document, notes afterwards."
			changes = append(changes, watchtest.Updated(prev[k], next))
			prev[k] = next
		}
		watchtest.Commit(b, ts.st, changes...)
	}
	var elapsed time.Duration
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		t0 := time.Now()
		stream, err := ts.client.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{AfterCursor: watch.NewCursorCodec(ts.st.ID()).Encode(0)})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for n < total {
			m, err := stream.Recv()
			if err != nil {
				b.Fatalf("after %d changes: %v", n, err)
			}
			if m.GetChange() != nil {
				n++
			}
		}
		elapsed += time.Since(t0)
		cancel()
	}
	b.ReportMetric(float64(total)*float64(b.N)/elapsed.Seconds(), "changes/s")
}
