package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// Profile sizes a benchmark run.
type Profile struct {
	Name              string        `json:"name"`
	Duration          time.Duration `json:"duration_ns"`
	Conns             int           `json:"conns"`
	FanoutRate        float64       `json:"fanout_rate"`
	FilteredStreams   int           `json:"filtered_streams"`
	UnfilteredStreams int           `json:"unfiltered_streams"`
	BroadcastStreams  int           `json:"broadcast_streams"`
	BroadcastRate     float64       `json:"broadcast_rate"`
	IdleStreams       int           `json:"idle_streams"`
	// CatchupChanges is the size of the log the catch-up replays. It is
	// filled through webhooks, one change each, as fast as calsync
	// processes them: a million takes minutes, so `make bench` keeps the
	// filled log (-catchup-db) and later runs reuse it.
	CatchupChanges int `json:"catchup_changes"`
	// Drain waits for the inbox to empty around each ingestion run, which
	// measures processing too but costs the quick profile its minute.
	// The PostgreSQL ingestion always drains.
	Drain bool `json:"drain"`
	// PGFanoutRate is the webhooks/s sent to replica A while
	// PGFilteredStreams one-calendar and PGUnfilteredStreams unfiltered
	// watchers are on replica B.
	PGFanoutRate        float64 `json:"pg_fanout_rate"`
	PGFilteredStreams   int     `json:"pg_filtered_streams"`
	PGUnfilteredStreams int     `json:"pg_unfiltered_streams"`
	// PeerPairs is how many times `peers` runs calsync's fan-out and
	// etcd's put → watch back to back.
	PeerPairs int `json:"peer_pairs"`
}

var profiles = map[string]Profile{
	"quick": {Name: "quick", Duration: 2 * time.Second, Conns: 64, FanoutRate: 2000, FilteredStreams: 200, UnfilteredStreams: 10,
		BroadcastStreams: 100, BroadcastRate: 1000, IdleStreams: 1000, CatchupChanges: 5_000,
		PGFanoutRate: 500, PGFilteredStreams: 90, PGUnfilteredStreams: 10, PeerPairs: 1},
	"full": {Name: "full", Duration: 15 * time.Second, Conns: 64, FanoutRate: 2000, FilteredStreams: 1000, UnfilteredStreams: 10,
		BroadcastStreams: 100, BroadcastRate: 1000, IdleStreams: 10_000, CatchupChanges: 1_000_000, Drain: true,
		PGFanoutRate: 500, PGFilteredStreams: 90, PGUnfilteredStreams: 10, PeerPairs: 3},
}

// Env is what every scenario shares: the calsync binary, a scratch folder
// and the fake Recall API.
type Env struct {
	Bin     string
	Dir     string
	Profile Profile
	Fake    *recalltest.Server
	// FakeCalendars are the Recall calendars the fake holds.
	FakeCalendars []string
	// Pprof, if set, is where the calsync under test serves profiles.
	Pprof string
	// Target, if set, is a running calsync to measure instead of starting
	// one; it must accept the tool's webhook secrets, and its CPU and
	// memory are not reported.
	Target *Child
	// CatchupDB, if set, keeps the catch-up scenario's filled database
	// there and reuses it while it holds as many changes as asked: filling
	// takes minutes, replaying seconds.
	CatchupDB string
	runs      int
}

// newEnv prepares the binary, the folder and a fake Recall API with a few
// calendars of Google events.
func newEnv(p Profile, bin string) (*Env, error) {
	dir, err := os.MkdirTemp("", "calsync-bench-")
	if err != nil {
		return nil, err
	}
	if bin == "" {
		if bin, err = buildCalsync(dir); err != nil {
			return nil, err
		}
	}
	e := &Env{Bin: bin, Dir: dir, Profile: p, Fake: recalltest.NewServer()}
	start := time.Now().Add(48 * time.Hour).Truncate(time.Hour)
	for c := range 5 {
		cal := e.Fake.PutCalendar(recalltest.Calendar{PlatformEmail: fmt.Sprintf("r%d@bench.example", c)})
		e.FakeCalendars = append(e.FakeCalendars, cal.ID)
		for i := range 20 {
			s := start.Add(time.Duration(i) * time.Hour)
			e.Fake.PutEvent(recalltest.Google(fmt.Sprintf("g%d-%d", c, i)).Summary(fmt.Sprintf("Recall %d", i)).
				Timed(s, s.Add(30*time.Minute), "Europe/Paris").Event(cal.ID))
		}
	}
	return e, nil
}

// calsync starts a fresh calsync on a new database.
func (e *Env) calsync(ctx context.Context, name string, maxBatch int, sync string) (*Child, error) {
	if e.Target != nil {
		return e.Target, nil
	}
	e.runs++
	return startCalsync(ctx, name, CalsyncOptions{
		Bin: e.Bin, DB: filepath.Join(e.Dir, fmt.Sprintf("%02d-%s.db", e.runs, fileName(name))), LogDir: e.Dir,
		MaxBatch: maxBatch, Synchronous: sync, RecallURL: e.Fake.URL, RecallKey: e.Fake.APIKey(), PprofAddr: e.Pprof,
	})
}

// calsyncOn starts calsync on an existing database.
func (e *Env) calsyncOn(ctx context.Context, name, db, sync string) (*Child, error) {
	return startCalsync(ctx, name, CalsyncOptions{
		Bin: e.Bin, DB: db, LogDir: e.Dir, Synchronous: sync, RecallURL: e.Fake.URL, RecallKey: e.Fake.APIKey(), PprofAddr: e.Pprof,
	})
}

// profile, when the server under test serves pprof, captures a CPU
// profile of the next d into benchmarks/profiles/<name>.pprof; the returned
// function waits for it.
func (e *Env) profile(name string, d time.Duration) func() {
	if e.Pprof == "" || d < time.Second {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.Pprof, int(d/time.Second)))
		if err != nil {
			log.Printf("profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		_ = os.MkdirAll("benchmarks/profiles", 0o755)
		f, err := os.Create(filepath.Join("benchmarks/profiles", fileName(name)+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// clientProfile, when profiles are taken (-pprof), starts a CPU profile of
// this tool, saved as benchmarks/profiles/<name>.pprof by the returned
// function: on a small machine the client's share decides figures too.
func (e *Env) clientProfile(name string) func() {
	if e.Pprof == "" {
		return func() {}
	}
	_ = os.MkdirAll("benchmarks/profiles", 0o755)
	f, err := os.Create(filepath.Join("benchmarks/profiles", fileName(name)+".pprof"))
	if err != nil {
		log.Printf("profile %s: %v", name, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Printf("profile %s: %v", name, err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// sampler records the child's peak RSS while a scenario runs.
type sampler struct {
	peak atomic.Int64
	stop chan struct{}
}

func sample(c *Child) *sampler {
	s := &sampler{stop: make(chan struct{})}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if r := c.RSS(); r > s.peak.Load() {
				s.peak.Store(r)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) done() int64 { close(s.stop); return s.peak.Load() }

// Server is the resources the server under test used during a scenario.
type Server struct {
	CPUPercent float64 `json:"cpu_percent"`
	// ClientCPUPercent is this tool's own CPU over the same time: on a
	// small machine the load generator competes with the server for cores.
	ClientCPUPercent float64 `json:"client_cpu_percent"`
	CPUPerOp         float64 `json:"cpu_us_per_webhook,omitempty"`
	PeakRSSMB        float64 `json:"peak_rss_mb"`
	// IOStallMs is how long every task of the machine with work to do
	// waited for I/O at once during the scenario (see ioStallTotal).
	IOStallMs float64 `json:"io_stall_ms,omitempty"`
}

func serverUse(c *Child, before ProcStats, elapsed time.Duration, peak int64, ops int64) Server {
	after := c.Stats()
	s := Server{CPUPercent: 100 * (after.CPU - before.CPU).Seconds() / elapsed.Seconds(), PeakRSSMB: mb(max(peak, after.RSS))}
	if self, err := readProcStats(os.Getpid()); err == nil && before.clientCPU > 0 {
		s.ClientCPUPercent = 100 * (self.CPU - before.clientCPU).Seconds() / elapsed.Seconds()
	}
	if ops > 0 {
		s.CPUPerOp = float64((after.CPU - before.CPU).Microseconds()) / float64(ops)
	}
	if before.ioStall > 0 && after.ioStall >= before.ioStall {
		s.IOStallMs = float64((after.ioStall - before.ioStall).Microseconds()) / 1000
	}
	return s
}

func mb(b int64) float64 { return float64(b*10/(1<<20)) / 10 }

// IngestResult is closed-loop webhook ingestion against one server.
type IngestResult struct {
	Name   string     `json:"name"`
	Load   LoadResult `json:"load"`
	Server Server     `json:"server"`
	// DrainSeconds is how long after the load the last delivery finished
	// processing; ProcessedPerS is deliveries processed per second over the
	// load plus the drain.
	DrainSeconds  float64 `json:"drain_s,omitempty"`
	ProcessedPerS float64 `json:"processed_per_s,omitempty"`
	Dead          int     `json:"dead_lettered"`
}

// The servers the ingestion scenario measures besides calsync.
type baseline int

const (
	noBaseline baseline = iota
	// bareBaseline answers without doing anything (bareServer).
	bareBaseline
	// referenceBaseline writes calsync's rows and nothing else
	// (reference.go).
	referenceBaseline
)

// ingest runs closed-loop ingestion against a baseline server, or against
// calsync with the given batch size (base noBaseline).
func (e *Env) ingest(ctx context.Context, name string, base baseline, maxBatch int) (IngestResult, error) {
	var c *Child
	var err error
	self, _ := os.Executable()
	addr := freeAddr()
	switch base {
	case bareBaseline:
		c, err = startChild(ctx, name, []string{self, "bare", "--addr", addr}, nil, e.Dir, "http://"+addr+"/healthz")
	case referenceBaseline:
		db := filepath.Join(e.Dir, fileName(name)+".db")
		c, err = startChild(ctx, name, []string{self, "reference", "--addr", addr, "--db", db}, nil, e.Dir, "http://"+addr+"/healthz")
	default:
		c, err = e.calsync(ctx, name, maxBatch, "FULL")
	}
	if c != nil && base != noBaseline {
		c.HTTPAddr = addr
	}
	if err != nil {
		return IngestResult{}, err
	}
	calsync := base == noBaseline
	defer c.Stop(10 * time.Second)
	w := NewWorkload(200, 50)
	if e.Target == nil {
		// A targeted server does not know the fake Recall API.
		w.RecallCalendars, w.RecallEvery = e.FakeCalendars, 20
	}
	p := NewPoster("http://"+c.HTTPAddr, e.Profile.Conns)
	// A short warm-up opens the connections and creates the calendars.
	w.Run(ctx, p, LoadSpec{Conns: e.Profile.Conns, Duration: time.Second})
	if calsync && e.Profile.Drain {
		if _, err := waitDrained(ctx, c, 2*time.Minute); err != nil {
			return IngestResult{}, err
		}
	}
	before, smp := c.Stats(), sample(c)
	start := time.Now()
	waitProfile := func() {}
	if calsync {
		waitProfile = e.profile(name, e.Profile.Duration-time.Second)
	}
	res := IngestResult{Name: name, Load: w.Run(ctx, p, LoadSpec{Conns: e.Profile.Conns, Duration: e.Profile.Duration})}
	waitProfile()
	res.Server = serverUse(c, before, time.Since(start), smp.done(), res.Load.OK)
	if calsync && e.Profile.Drain {
		drain, err := waitDrained(ctx, c, 5*time.Minute)
		if err != nil {
			return res, err
		}
		res.DrainSeconds = drain.Seconds()
		res.ProcessedPerS = float64(res.Load.OK) / time.Since(start).Seconds()
		res.Dead = countDeliveries(ctx, c, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	}
	log.Printf("%s: %.0f webhooks/s, answer p50 %.2f ms p99 %.2f ms, server CPU %.0f%%, %d errors",
		name, res.Load.Throughput, res.Load.Answer.P50, res.Load.Answer.P99, res.Server.CPUPercent, res.Load.Errors)
	return res, nil
}

// grpcConn dials the child's gRPC address.
func grpcConn(c *Child) *grpc.ClientConn {
	conns, err := dialConns(c.GRPCAddr, 1)
	if err != nil {
		panic(err)
	}
	return conns[0]
}

// countDeliveries returns how many deliveries are in state (up to 1000).
func countDeliveries(ctx context.Context, c *Child, state calsyncv1.DeliveryState) int {
	conn := grpcConn(c)
	defer conn.Close()
	resp, err := calsyncv1.NewDeliveryServiceClient(conn).ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{State: state, PageSize: 1000})
	if err != nil {
		return -1
	}
	return len(resp.GetDeliveries())
}

// waitDrained waits until the inbox holds no pending delivery, and returns
// how long that took.
func waitDrained(ctx context.Context, c *Child, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	conn := grpcConn(c)
	defer conn.Close()
	cl := calsyncv1.NewDeliveryServiceClient(conn)
	for {
		resp, err := cl.ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{State: calsyncv1.DeliveryState_DELIVERY_STATE_PENDING, PageSize: 1})
		if err == nil && len(resp.GetDeliveries()) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("%s: inbox not drained after %v (last error %v)", c.Name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// calendarIDs maps postpress calendar ids to calsync's ids, through the
// public ListCalendars.
func calendarIDs(ctx context.Context, c *Child) (map[string]string, error) {
	conn := grpcConn(c)
	defer conn.Close()
	cl := calsyncv1.NewCalendarServiceClient(conn)
	out := map[string]string{}
	tok := ""
	for {
		resp, err := cl.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{Provider: "postpress", PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		for _, cal := range resp.GetCalendars() {
			out[cal.GetProviderCalendarId()] = cal.GetId()
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return out, nil
		}
	}
}

// FanoutResult is webhook-sent → change-received at a fixed rate to many
// watchers.
type FanoutResult struct {
	Name             string      `json:"name"`
	Rate             float64     `json:"rate"`
	Filtered         int         `json:"filtered_streams"`
	Unfiltered       int         `json:"unfiltered_streams"`
	REST             int         `json:"rest_streams"`
	Load             LoadResult  `json:"load"`
	Latency          Summary     `json:"sent_to_received"`
	Check            StreamCheck `json:"check"`
	Server           Server      `json:"server"`
	MessagesPerS     float64     `json:"messages_per_s"`
	CaughtUpSeconds  float64     `json:"caught_up_s"`
	AllCaught        bool        `json:"all_caught"`
	MaxSustainedMsgs float64     `json:"max_sustained_messages_per_s,omitempty"`
}

// fanout runs webhooks at rate over calendars, one event each... with
// filtered watchers (one calendar each) and unfiltered ones; a tenth of the
// filtered and a fifth of the unfiltered go through REST NDJSON.
func (e *Env) fanout(ctx context.Context, c *Child, name string, rate float64, filtered, unfiltered int, dur time.Duration, rest bool) (FanoutResult, error) {
	return e.fanoutAcross(ctx, c, c, name, rate, filtered, unfiltered, dur, rest)
}

// fanoutAcross is fanout with the webhooks sent to one server (post) and
// the watchers on another (c): two replicas of one database, where a change
// committed through post must reach c's watchers. The server use reported
// is c's.
func (e *Env) fanoutAcross(ctx context.Context, post, c *Child, name string, rate float64, filtered, unfiltered int, dur time.Duration, rest bool) (FanoutResult, error) {
	cals := max(filtered, 100)
	w := NewWorkload(cals, 2)
	p := NewPoster("http://"+post.HTTPAddr, 64)
	// Version 1 of every event creates the calendars; the streams start
	// after it is processed.
	w.Run(ctx, p, LoadSpec{Conns: 64, OnePass: true})
	if _, err := waitDrained(ctx, post, 2*time.Minute); err != nil {
		return FanoutResult{}, err
	}
	ids, err := calendarIDs(ctx, c)
	if err != nil {
		return FanoutResult{}, err
	}
	base := w.Versions()
	set := &WatchSet{}
	calOf := map[*Watcher]int{}
	for i := range filtered {
		wt := NewWatcher(fmt.Sprintf("cal-%d", i), []string{ids[w.CalendarOf(i*w.EventsPerCalendar)]}, rest && i%10 == 9, base)
		calOf[wt] = i
		set.Watchers = append(set.Watchers, wt)
	}
	for i := range unfiltered {
		set.Watchers = append(set.Watchers, NewWatcher(fmt.Sprintf("all-%d", i), nil, rest && i%5 == 4, base))
	}
	if err := set.Start(ctx, c.GRPCAddr, "http://"+c.HTTPAddr, 16); err != nil {
		return FanoutResult{}, err
	}
	defer set.Stop()
	want := func(wt *Watcher) map[string]int {
		if ci, ok := calOf[wt]; ok {
			return w.CalendarVersions(w.Versions(), ci)
		}
		return w.Versions()
	}
	before, smp := c.Stats(), sample(c)
	start := time.Now()
	res := FanoutResult{Name: name, Rate: rate, Filtered: filtered, Unfiltered: unfiltered}
	for _, wt := range set.Watchers {
		if wt.REST {
			res.REST++
		}
	}
	waitProfile := e.profile(name, dur-time.Second)
	stopClientProfile := e.clientProfile(name + "-client")
	res.Load = w.Run(ctx, p, LoadSpec{Conns: 64, Rate: rate, Duration: dur})
	stopClientProfile()
	waitProfile()
	loadEnd := time.Now()
	res.AllCaught = set.WaitCaught(want, 60*time.Second)
	res.CaughtUpSeconds = time.Since(loadEnd).Seconds()
	res.Server = serverUse(c, before, time.Since(start), smp.done(), res.Load.OK)
	res.Check = set.Check(want)
	res.Latency = set.Latencies()
	res.MessagesPerS = float64(res.Check.Received) / loadEnd.Sub(start).Seconds()
	log.Printf("%s: %.0f/s × %d+%d streams: sent→received p50 %.2f ms p99 %.2f ms max %.1f ms; missing %d dup %d order %d; machine stalled on I/O %.0f ms",
		name, res.Load.Throughput, filtered, unfiltered, res.Latency.P50, res.Latency.P99, res.Latency.Max,
		res.Check.Missing, res.Check.Duplicates, res.Check.OrderDisagreements, res.Server.IOStallMs)
	return res, nil
}

// IdleResult is server memory with many open, idle streams.
type IdleResult struct {
	IdleRSSMB       float64 `json:"idle_rss_mb"`
	Streams         int     `json:"streams"`
	RSSWithStreams  float64 `json:"rss_with_streams_mb"`
	KBPerStream     float64 `json:"kb_per_stream"`
	OpenSeconds     float64 `json:"open_s"`
	GoroutinesLocal int     `json:"bench_goroutines"`
}

// idle measures a fresh server's RSS, then its RSS with n idle streams.
func (e *Env) idle(ctx context.Context, n int) (IdleResult, error) {
	c, err := e.calsync(ctx, "idle", 0, "FULL")
	if err != nil {
		return IdleResult{}, err
	}
	defer c.Stop(10 * time.Second)
	time.Sleep(2 * time.Second)
	res := IdleResult{IdleRSSMB: mb(c.Stats().RSS), Streams: n}
	set := &WatchSet{}
	for i := range n {
		wt := NewWatcher(fmt.Sprintf("idle-%d", i), nil, false, nil)
		wt.keepLatency = false
		set.Watchers = append(set.Watchers, wt)
	}
	start := time.Now()
	before := c.Stats().RSS
	if err := set.Start(ctx, c.GRPCAddr, "http://"+c.HTTPAddr, 16); err != nil {
		return res, err
	}
	defer set.Stop()
	res.OpenSeconds = time.Since(start).Seconds()
	time.Sleep(3 * time.Second)
	after := c.Stats().RSS
	res.RSSWithStreams = mb(after)
	res.KBPerStream = float64(after-before) / 1024 / float64(n)
	res.GoroutinesLocal = runtime.NumGoroutine()
	log.Printf("idle: RSS %.1f MB; %d streams add %.1f KB each", res.IdleRSSMB, n, res.KBPerStream)
	return res, nil
}

// CatchupResult is one client replaying a long change log.
type CatchupResult struct {
	Changes     int     `json:"changes"`
	FillSeconds float64 `json:"fill_s"`
	FillPerS    float64 `json:"fill_changes_per_s"`
	Seconds     float64 `json:"replay_s"`
	ChangesPerS float64 `json:"replay_changes_per_s"`
	Duplicates  int64   `json:"duplicates"`
	// CursorRegressions counts changes whose cursor was not above the
	// previous one: the replay must be in cursor order.
	CursorRegressions int64   `json:"cursor_regressions"`
	Missing           int64   `json:"missing"`
	ServerRSSMB       float64 `json:"peak_rss_mb"`
	Server            Server  `json:"replay_cpu"`
	Synchronous       string  `json:"fill_synchronous"`
}

// catchup fills a change log with n changes through webhooks, then times
// one gRPC client reading all of it from the start. The fill runs with
// synchronous=NORMAL: it is set-up, not the figure measured. The replay
// runs on a server started afresh on the filled log with the served
// default (synchronous=FULL), as every other measured server does.
func (e *Env) catchup(ctx context.Context, n int) (CatchupResult, error) {
	res := CatchupResult{Changes: n, Synchronous: "NORMAL"}
	saved, reuse := e.savedCatchup(n)
	if reuse {
		log.Printf("catch-up: replaying the log saved in %s", e.CatchupDB)
	} else {
		var err error
		if saved, err = e.fillCatchupDB(ctx, n); err != nil {
			return res, err
		}
	}
	res.FillSeconds, res.FillPerS = saved.FillSeconds, saved.FillPerS
	c, err := e.calsyncOn(ctx, "catchup", saved.DB, "")
	if err != nil {
		return res, err
	}
	defer c.Stop(30 * time.Second)
	want := saved.Want
	rd := NewWatcher("replay", nil, false, nil)
	rd.keepLatency = false
	rd.cursor = saved.From
	// The server's profile must cover the replay, whose length is not known
	// yet: it is sized for 100,000 changes/s, and the server is idle once
	// the replay ends, so a longer profile holds the same samples.
	waitProfile := e.profile("catchup", time.Duration(n/100_000+1)*time.Second)
	stopClientProfile := e.clientProfile("catchup-client")
	before, smp := c.Stats(), sample(c)
	start := time.Now()
	set := &WatchSet{Watchers: []*Watcher{rd}}
	if err := set.Start(ctx, c.GRPCAddr, "http://"+c.HTTPAddr, 1); err != nil {
		return res, err
	}
	ok := set.WaitCaught(func(*Watcher) map[string]int { return want }, 10*time.Minute)
	// The replay ends with the last change, not when the poll above
	// notices: on a short log the poll's period would be much of the time.
	end := time.Now()
	if last := rd.LastChange(); ok && last.After(start) {
		end = last
	}
	res.Seconds = end.Sub(start).Seconds()
	// CPU is the replay's: read before waiting out the server's profile,
	// which runs on past the replay's end while the server is idle, over
	// the replay's time.
	res.Server = serverUse(c, before, end.Sub(start), smp.done(), 0)
	stopClientProfile()
	set.Stop()
	waitProfile()
	res.ServerRSSMB = res.Server.PeakRSSMB
	res.ChangesPerS = float64(rd.Checker.Received) / res.Seconds
	res.Duplicates, res.Missing, res.CursorRegressions = rd.Checker.Duplicates, rd.Checker.Missing(want), rd.Checker.Regressions
	if !ok {
		log.Printf("catch-up: replay did not finish")
	}
	log.Printf("catch-up: %d changes replayed in %.2f s = %.0f changes/s (fill %.0f/s)", rd.Checker.Received, res.Seconds, res.ChangesPerS, res.FillPerS)
	return res, nil
}

// fillCatchupDB fills a new change log with n changes through a server of
// its own (synchronous=NORMAL), which it stops, and keeps a copy of the
// log in e.CatchupDB if set.
func (e *Env) fillCatchupDB(ctx context.Context, n int) (catchupLog, error) {
	c, err := e.calsync(ctx, "catchup-fill", 0, "NORMAL")
	if err != nil {
		return catchupLog{}, err
	}
	saved, err := e.fillCatchup(ctx, c, n)
	// The database is used (and copied) only once calsync has closed it.
	c.Stop(30 * time.Second)
	if err != nil {
		return saved, err
	}
	saved.DB = c.DB
	if e.CatchupDB != "" {
		if err := saveCatchup(e.CatchupDB, c.DB, saved); err != nil {
			log.Printf("catch-up: save the filled log: %v", err)
		}
	}
	return saved, nil
}

// catchupLog is a filled catch-up change log: where the replay starts and
// the versions it must end at.
type catchupLog struct {
	Changes     int            `json:"changes"`
	From        string         `json:"from_cursor"`
	Want        map[string]int `json:"want"`
	FillSeconds float64        `json:"fill_s"`
	FillPerS    float64        `json:"fill_changes_per_s"`
	// DB is the copy a reused log's server runs on.
	DB string `json:"-"`
}

// fillCatchup sends n webhooks, one change each, to c and waits until they
// are processed.
func (e *Env) fillCatchup(ctx context.Context, c *Child, n int) (catchupLog, error) {
	first := NewWatcher("first", nil, false, nil)
	fs := &WatchSet{Watchers: []*Watcher{first}}
	if err := fs.Start(ctx, c.GRPCAddr, "http://"+c.HTTPAddr, 1); err != nil {
		return catchupLog{}, err
	}
	l := catchupLog{Changes: n, From: first.Cursor()}
	fs.Stop()
	w := NewWorkload(100, 100)
	p := NewPoster("http://"+c.HTTPAddr, 64)
	start := time.Now()
	load := w.Run(ctx, p, LoadSpec{Conns: 64, MaxSends: int64(n)})
	drain, err := waitDrained(ctx, c, 30*time.Minute)
	if err != nil {
		return l, err
	}
	l.FillSeconds = time.Since(start).Seconds()
	log.Printf("catch-up fill: %d webhooks answered in %.1f s (%.0f/s), processed %.1f s later", load.OK, load.Seconds, load.Throughput, drain.Seconds())
	// Every event also made its calendar once: count only event changes.
	l.FillPerS = float64(n) / l.FillSeconds
	l.Want = w.Versions()
	return l, nil
}

// savedCatchup returns the log saved by -catchup-db, copied to a fresh
// database, if one of n changes is there.
func (e *Env) savedCatchup(n int) (catchupLog, bool) {
	var l catchupLog
	if e.CatchupDB == "" || !readJSON(e.CatchupDB+".json", &l) || l.Changes != n {
		return l, false
	}
	e.runs++
	l.DB = filepath.Join(e.Dir, fmt.Sprintf("%02d-catchup.db", e.runs))
	if err := copyDB(l.DB, e.CatchupDB); err != nil {
		log.Printf("catch-up: reuse %s: %v", e.CatchupDB, err)
		return l, false
	}
	return l, true
}

// saveCatchup keeps a filled log for later runs: the database at dst and
// what the replay needs at dst.json.
func saveCatchup(dst, db string, l catchupLog) error {
	if err := copyDB(dst, db); err != nil {
		return err
	}
	log.Printf("catch-up: saved the filled log in %s", dst)
	return writeJSON(dst+".json", l)
}

// copyDB copies a closed SQLite database, with its write-ahead log if
// closing left one.
func copyDB(dst, src string) error {
	_ = os.Remove(dst + "-wal")
	if _, err := os.Stat(src + "-wal"); err == nil {
		if err := copyFile(dst+"-wal", src+"-wal"); err != nil {
			return err
		}
	}
	return copyFile(dst, src)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// bareServer answers 200 to every request after reading its body: the
// ceiling of HTTP request handling on this machine.
func bareServer(addr string) error {
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 4096)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"delivery_id":"0","duplicate":false}`))
	}))
}

func hostname() string { h, _ := os.Hostname(); return strings.TrimSpace(h) }
