package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/model"
)

// BenchmarkProcessPostpress measures how fast the processor drains an
// inbox of postpress deliveries (new events and updates of them) into
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
				const n = 2000
				for i := range n {
					// 500 events over 50 calendars, four versions each.
					body := bytes.ReplaceAll(ppVersion(fmt.Sprintf("evt%d", i%500), i/500, false),
						[]byte("owner@example.com"), fmt.Appendf(nil, "c%d@example.com", i%50))
					if _, err := p.recv.Receive(ctx, model.ProviderPostpress, body, h); err != nil {
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
