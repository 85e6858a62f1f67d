package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/watch/watchtest"
)

// BenchmarkWatchBroadcast measures what the server and its clients, in this
// process, spend per message (one change to one stream) when N unfiltered
// streams, over REST NDJSON or gRPC, receive commits of 16 UPDATED changes
// (with previous state, which the streams do not ask for). The clients only
// count the changes (REST: the lines holding one), so the figures are
// mostly the server's: hub, encoding and transport. Committing is included,
// shared by all N streams.
func BenchmarkWatchBroadcast(b *testing.B) {
	const perCommit = 16
	for _, n := range []int{20, 100} {
		for _, kind := range []string{"rest", "grpc"} {
			b.Run(fmt.Sprintf("streams=%d/%s", n, kind), func(b *testing.B) {
				ts := mustStartServer(b, "", testWatchConfig())
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var received atomic.Int64
				var ready, done sync.WaitGroup
				ready.Add(n)
				for range n {
					done.Go(func() {
						if kind == "grpc" {
							stream, err := ts.client.WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
							if err != nil {
								b.Error(err)
								ready.Done()
								return
							}
							first := true
							for {
								m, err := stream.Recv()
								if err != nil {
									return
								}
								if first {
									first = false
									ready.Done()
								}
								if m.GetChange() != nil {
									received.Add(1)
								}
							}
						}
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ts.srv.HTTPAddr()+"/v1/events:watch", nil)
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							b.Error(err)
							ready.Done()
							return
						}
						defer resp.Body.Close()
						sc := bufio.NewScanner(resp.Body)
						sc.Buffer(make([]byte, 64<<10), 1<<20)
						first := true
						for sc.Scan() {
							if first {
								first = false
								ready.Done()
							}
							if bytes.HasPrefix(sc.Bytes(), []byte(`{"result":{"change"`)) {
								received.Add(1)
							}
						}
					})
				}
				ready.Wait()
				cal := watchtest.CalendarID(model.ProviderPostpress, 1)
				prev := make([]*calsyncv1.CalendarEvent, perCommit)
				for j := range prev {
					prev[j] = watchtest.Event(model.ProviderPostpress, cal, j, "version 0")
				}
				changes := make([]*calsyncv1.Change, perCommit)
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				cpu0 := cputime.Process()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					for j := range changes {
						next := watchtest.Event(model.ProviderPostpress, cal, j, fmt.Sprintf("version %d", i+1))
						changes[j] = watchtest.Updated(prev[j], next)
						prev[j] = next
					}
					want := received.Load() + int64(n*perCommit)
					watchtest.Commit(b, ts.st, changes...)
					for received.Load() < want {
						runtime.Gosched()
					}
				}
				b.StopTimer()
				runtime.ReadMemStats(&ms1)
				msgs := float64(b.N * n * perCommit)
				if cpu := cputime.Process(); cpu > 0 {
					b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/1000/msgs, "cpu-µs/message")
				}
				b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/msgs, "allocs/message")
				b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/msgs, "B/message")
				cancel()
				ts.stop()
				done.Wait()
			})
		}
	}
}
