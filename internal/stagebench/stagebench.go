// Package stagebench reports what every per-stage benchmark reports (the
// BenchmarkStage* functions, run together by `make bench-stages`): the
// process CPU each webhook costs and its allocations, two figures that
// move far less with a shared machine's load than wall-clock time does.
package stagebench

import (
	"testing"
	"time"

	"github.com/calsync/calsync/internal/cputime"
)

// CPU measures the process CPU spent between Start and Report.
type CPU struct {
	start time.Duration
}

// Start begins a measurement and turns on allocation reporting. Call it
// after the benchmark's setup, just before the measured loop.
func Start(b *testing.B) *CPU {
	b.ReportAllocs()
	b.ResetTimer()
	return &CPU{start: cputime.Process()}
}

// Report adds "cpu-µs/<per>": the process CPU, user plus system, since
// Start divided by n, the number of webhooks (or deliveries) handled.
// Process CPU counts every goroutine, the runtime's GC included, which is
// the point: a stage's cost includes the garbage it makes.
func (c *CPU) Report(b *testing.B, n int, per string) {
	used := cputime.Process() - c.start
	if used <= 0 || n <= 0 {
		return
	}
	b.ReportMetric(float64(used.Nanoseconds())/1e3/float64(n), "cpu-µs/"+per)
}
