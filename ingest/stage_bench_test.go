package ingest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/store"
)

// startFakeRecallProcess starts a fake Recall API in a child process (this
// test binary, see TestMain) with calendars × events Google events.
func startFakeRecallProcess(b *testing.B, calendars, events int) fakeRecallInfo {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%dx%d", fakeRecallEnv, calendars, events))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	var info fakeRecallInfo
	if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&info); err != nil {
		b.Fatalf("fake Recall API did not start: %v", err)
	}
	return info
}

// BenchmarkStageRecallHint is the processing of Recall hints on calsync's
// side: each hint (already in the inbox) makes calsync fetch its
// calendar's events from the Recall API and apply them to a real SQLite
// store (synchronous=NORMAL). The Recall API is the fake, run in a child
// process, so the CPU reported is calsync's alone: getrusage(RUSAGE_SELF)
// counts this process only, and the fake's work (building and encoding
// the pages) happens in the child. What calsync spends on the HTTP
// exchange (its client, decoding the pages) is counted, as it should be.
// Every iteration starts from an empty store, so each event is new: one
// calendar lookup, one event list (two pages of 50) and 100 applied events
// per hint.
func BenchmarkStageRecallHint(b *testing.B) {
	const calendars, events = 20, 100
	info := startFakeRecallProcess(b, calendars, events)
	var cpu time.Duration
	var allocs uint64
	var ms runtime.MemStats
	hints := 0
	for b.Loop() {
		b.StopTimer()
		p := newPipelineOn(b, mustOpenStore(b), nil, func(c *ProcessorConfig) {
			c.Workers = 32
			c.Recall = recall.NewClient(info.URL, info.APIKey,
				recall.WithRateLimit(recall.EndpointEventList, 0, 0), recall.WithRateLimit(recall.EndpointCalendarRetrieve, 0, 0))
		})
		for i, cal := range info.Calendars {
			p.sendHint(b, cal, fmt.Sprintf("msg_%d", i))
		}
		b.StartTimer()
		runtime.ReadMemStats(&ms)
		cpu0, mallocs0 := cputime.Process(), ms.Mallocs
		p.start(b)
		p.drain(b)
		cpu += cputime.Process() - cpu0
		runtime.ReadMemStats(&ms)
		allocs += ms.Mallocs - mallocs0
		hints += calendars
		b.StopTimer()
		if n := countEvents(b, p); n != calendars*events {
			b.Fatalf("%d events stored, want %d", n, calendars*events)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(hints), "cpu-µs/hint")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(hints*events), "cpu-µs/event")
	b.ReportMetric(float64(allocs)/float64(hints*events), "allocs/event")
}

func countEvents(b *testing.B, p *pipeline) int {
	b.Helper()
	evs, err := p.st.ListEvents(context.Background(), store.EventQuery{})
	if err != nil {
		b.Fatal(err)
	}
	return len(evs)
}
