// Package stagebench reports what every per-stage benchmark reports (the
// BenchmarkStage* functions, run together by `make bench-stages`): the
// process CPU each webhook costs and its allocations, two figures that
// move far less with a shared machine's load than wall-clock time does.
package stagebench

import (
	"runtime/metrics"
	"testing"

	"github.com/calsync/calsync/internal/cputime"
)

// CPU measures the process CPU spent between Start and Report.
type CPU struct {
	start, gcStart float64
}

// gcCPUMetric is the runtime's estimate of the CPU its garbage collector
// used, in seconds.
const gcCPUMetric = "/cpu/classes/gc/total:cpu-seconds"

func gcCPUSeconds() float64 {
	s := []metrics.Sample{{Name: gcCPUMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return s[0].Value.Float64()
}

// Start begins a measurement and turns on allocation reporting. Call it
// after the benchmark's setup, just before the measured loop.
func Start(b *testing.B) *CPU {
	b.ReportAllocs()
	b.ResetTimer()
	return &CPU{start: cputime.Process().Seconds(), gcStart: gcCPUSeconds()}
}

// Report adds "cpu-µs/<per>": the process CPU, user plus system, since
// Start divided by n, the number of webhooks (or deliveries) handled.
// Process CPU counts every goroutine, the runtime's GC included, which is
// the point: a stage's cost includes the garbage it makes. "gc-µs/<per>"
// is the part the runtime attributes to garbage collection.
func (c *CPU) Report(b *testing.B, n int, per string) {
	used := cputime.Process().Seconds() - c.start
	if used <= 0 || n <= 0 {
		return
	}
	b.ReportMetric(used*1e6/float64(n), "cpu-µs/"+per)
	b.ReportMetric((gcCPUSeconds()-c.gcStart)*1e6/float64(n), "gc-µs/"+per)
}
