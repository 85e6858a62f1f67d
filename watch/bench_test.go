package watch_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// startIdle opens n unfiltered streams that count what they receive and
// waits until each has its starting bookmark.
func startIdle(b *testing.B, ctx context.Context, h *watch.Hub, n int, received *atomic.Int64) *sync.WaitGroup {
	b.Helper()
	reqs := make([]*calsyncv1.WatchEventsRequest, n)
	for i := range reqs {
		reqs[i] = &calsyncv1.WatchEventsRequest{}
	}
	return startStreams(b, ctx, h, reqs, func(int) *atomic.Int64 { return received })
}

// startStreams opens a stream per request, the i-th counting the changes it
// receives in counter(i), and waits until each has its starting bookmark.
func startStreams(b *testing.B, ctx context.Context, h *watch.Hub, reqs []*calsyncv1.WatchEventsRequest, counter func(i int) *atomic.Int64) *sync.WaitGroup {
	b.Helper()
	var wg, ready sync.WaitGroup
	ready.Add(len(reqs))
	for i, req := range reqs {
		received := counter(i)
		wg.Go(func() {
			first := true
			h.Watch(ctx, req, func(watch.Frame) error {
				if first {
					first = false
					ready.Done()
					return nil
				}
				received.Add(1)
				return nil
			})
		})
	}
	ready.Wait()
	return &wg
}

// BenchmarkFanOut measures how long a committed change takes to reach every
// one of N open streams (commit included).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			st := MustOpenStore(b)
			h := MustHub(b, st, watch.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			var received atomic.Int64
			wg := startIdle(b, ctx, h, n, &received)
			cal := watchtest.CalendarID(model.ProviderPostpress, 1)
			var commit, total time.Duration
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				want := received.Load() + int64(n)
				t0 := time.Now()
				watchtest.Commit(b, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, i, "e")))
				commit += time.Since(t0)
				for received.Load() < want {
					runtime.Gosched()
				}
				total += time.Since(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-all-streams")
			b.ReportMetric(float64((total-commit).Microseconds())/float64(b.N)/1000, "ms-after-commit")
			cancel()
			wg.Wait()
		})
	}
}

// BenchmarkFanOutFiltered measures commits spread over many calendars, each
// watched by its own stream, with a few unfiltered streams besides: how long
// a change takes to reach its calendar's stream and every unfiltered one,
// and the CPU the whole process spends per commit (committing included).
func BenchmarkFanOutFiltered(b *testing.B) {
	const calendars, unfiltered = 1000, 10
	st := MustOpenStore(b)
	h := MustHub(b, st, watch.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cals := make([]string, calendars)
	reqs := make([]*calsyncv1.WatchEventsRequest, 0, calendars+unfiltered)
	for i := range cals {
		cals[i] = watchtest.CalendarID(model.ProviderPostpress, i)
		reqs = append(reqs, &calsyncv1.WatchEventsRequest{CalendarIds: []string{cals[i]}})
	}
	for range unfiltered {
		reqs = append(reqs, &calsyncv1.WatchEventsRequest{})
	}
	perCalendar := make([]atomic.Int64, calendars)
	var all atomic.Int64
	wg := startStreams(b, ctx, h, reqs, func(i int) *atomic.Int64 {
		if i < calendars {
			return &perCalendar[i]
		}
		return &all
	})
	var commit, total time.Duration
	cpu0 := cputime.Process()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		mine := &perCalendar[i%calendars]
		wantMine, wantAll := mine.Load()+1, all.Load()+unfiltered
		t0 := time.Now()
		watchtest.Commit(b, st, watchtest.Created(watchtest.Event(model.ProviderPostpress, cals[i%calendars], i, "e")))
		commit += time.Since(t0)
		for mine.Load() < wantMine || all.Load() < wantAll {
			runtime.Gosched()
		}
		total += time.Since(t0)
	}
	b.StopTimer()
	if cpu := cputime.Process(); cpu > 0 {
		b.ReportMetric(float64((cpu-cpu0).Microseconds())/float64(b.N), "cpu-µs/commit")
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-streams")
	b.ReportMetric(float64((total-commit).Microseconds())/float64(b.N)/1000, "ms-after-commit")
	cancel()
	wg.Wait()
}

// BenchmarkIdleStreamMemory measures what an open, idle stream costs: heap
// and goroutine stack, per stream, with 10,000 streams.
func BenchmarkIdleStreamMemory(b *testing.B) {
	const n = 10000
	st := MustOpenStore(b)
	h := MustHub(b, st, watch.Config{})
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		var received atomic.Int64
		wg := startIdle(b, ctx, h, n, &received)
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := (after.HeapAlloc + after.StackInuse) - (before.HeapAlloc + before.StackInuse)
		b.ReportMetric(float64(used)/n, "bytes/stream")
		cancel()
		wg.Wait()
	}
}

// BenchmarkCatchUp measures how fast a stream resuming far behind reads the
// change log (the in-memory tail holds none of it).
func BenchmarkCatchUp(b *testing.B) {
	const total, perTx = 50000, 1000
	st := MustOpenStore(b)
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	for i := 0; i < total; i += perTx {
		var cs []*calsyncv1.Change
		for j := i; j < i+perTx; j++ {
			cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, j, "catch-up")))
		}
		watchtest.Commit(b, st, cs...)
	}
	head, err := st.ChangeBounds(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	h := MustHub(b, st, watch.Config{})
	var elapsed time.Duration
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		var n int
		t0 := time.Now()
		h.Watch(ctx, &calsyncv1.WatchEventsRequest{AfterCursor: h.Cursors().Encode(0)}, func(watch.Frame) error {
			if n++; n > total { // the starting bookmark, then every change
				cancel()
			}
			return nil
		})
		elapsed += time.Since(t0)
		cancel()
		if n <= total {
			b.Fatalf("caught up %d of %d changes (head %d)", n-1, total, head.Head)
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/elapsed.Seconds(), "changes/s")
}

// countingSink is a JSON stream's client that counts the changes it gets.
type countingSink struct {
	received *atomic.Int64
	ready    func()
}

func (s *countingSink) Send(m watch.Message) error {
	if m.Bookmark {
		if s.ready != nil {
			s.ready()
			s.ready = nil
		}
		return nil
	}
	s.received.Add(1)
	return nil
}

func (s *countingSink) Flush() error { return nil }

// BenchmarkBroadcast measures what broadcasting costs the process per
// message (one change to one stream): N unfiltered streams, gRPC (protobuf
// frames) or REST (JSON), receive commits of 16 changes each. cpu-µs/message
// and allocs/message include committing, which is shared by all N streams.
func BenchmarkBroadcast(b *testing.B) {
	const perCommit = 16
	for _, n := range []int{10, 100} {
		for _, kind := range []string{"grpc", "json"} {
			b.Run(fmt.Sprintf("streams=%d/%s", n, kind), func(b *testing.B) {
				st := MustOpenStore(b)
				h := MustHub(b, st, watch.Config{JSON: protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}})
				ctx, cancel := context.WithCancel(context.Background())
				var received atomic.Int64
				var wg *sync.WaitGroup
				if kind == "grpc" {
					wg = startIdle(b, ctx, h, n, &received)
				} else {
					wg = &sync.WaitGroup{}
					var ready sync.WaitGroup
					ready.Add(n)
					for range n {
						wg.Go(func() {
							h.WatchJSON(ctx, &calsyncv1.WatchEventsRequest{}, &countingSink{received: &received, ready: ready.Done})
						})
					}
					ready.Wait()
				}
				cal := watchtest.CalendarID(model.ProviderPostpress, 1)
				changes := make([]*calsyncv1.Change, perCommit)
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				cpu0 := cputime.Process()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					for j := range changes {
						changes[j] = watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, i*perCommit+j, "e"))
					}
					want := received.Load() + int64(n*perCommit)
					watchtest.Commit(b, st, changes...)
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
				cancel()
				wg.Wait()
			})
		}
	}
}
