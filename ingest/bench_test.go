package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/model"
)

// BenchmarkProcessPostpress measures how fast the asynchronous processor
// drains an inbox of postpress deliveries left PENDING (new events and updates of them) into
// events and change-log entries, on a real SQLite file, and the CPU each
// delivery costs (the steadier figure on a shared machine).
func BenchmarkProcessPostpress(b *testing.B) {
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	ctx := context.Background()
	for _, workers := range []int{8, 32} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var cpu time.Duration
			deliveries := 0
			for b.Loop() {
				b.StopTimer()
				p := newPipeline(b, nil, func(c *ProcessorConfig) { c.Workers = workers })
				// A receiver that leaves every delivery PENDING fills the
				// inbox for the processor to drain.
				recv := NewReceiver(p.st, ReceiverConfig{Postpress: p.recv.postpress})
				const n = 2000
				for i := range n {
					// 500 events over 50 calendars, four versions each.
					body := bytes.ReplaceAll(ppVersion(fmt.Sprintf("evt%d", i%500), i/500, false),
						[]byte("owner@example.com"), fmt.Appendf(nil, "c%d@example.com", i%50))
					if _, err := recv.Receive(ctx, model.ProviderPostpress, body, h); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start, cpu0 := time.Now(), cputime.Process()
				p.start(b)
				p.drain(b)
				cpu += cputime.Process() - cpu0
				deliveries += n
				b.ReportMetric(n/time.Since(start).Seconds(), "deliveries/s")
			}
			if cpu > 0 {
				b.ReportMetric(float64(cpu.Microseconds())/float64(deliveries), "cpu-µs/delivery")
			}
		})
	}
}

// BenchmarkReceivePostpress measures a postpress webhook from verification
// to applied: 64 concurrent callers hand distinct deliveries (new events
// and updates of them) to the Receiver, on a real SQLite file with
// synchronous=FULL, and the clock stops once the inbox has nothing
// pending. It reports the process CPU and the allocations per webhook,
// intake and processing together.
func BenchmarkReceivePostpress(b *testing.B) {
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	ctx := context.Background()
	const n, callers = 4000, 64
	var cpu time.Duration
	var allocs uint64
	webhooks := 0
	for b.Loop() {
		b.StopTimer()
		p := newPipeline(b, nil, func(*ProcessorConfig) {})
		bodies := make([][]byte, n)
		for i := range bodies {
			// 1,000 events over 100 calendars, four versions each.
			bodies[i] = bytes.ReplaceAll(ppVersion(fmt.Sprintf("evt%d", i%1000), i/1000, false),
				[]byte("owner@example.com"), fmt.Appendf(nil, "c%d@example.com", i%100))
		}
		p.start(b)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		b.StartTimer()
		start, cpu0 := time.Now(), cputime.Process()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
					if _, err := p.recv.Receive(ctx, model.ProviderPostpress, bodies[i], h); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		p.drain(b)
		cpu += cputime.Process() - cpu0
		runtime.ReadMemStats(&ms1)
		allocs += ms1.Mallocs - ms0.Mallocs
		webhooks += n
		b.ReportMetric(n/time.Since(start).Seconds(), "webhooks/s")
	}
	if webhooks > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(webhooks), "cpu-µs/webhook")
		b.ReportMetric(float64(allocs)/float64(webhooks), "allocs/webhook")
	}
}
