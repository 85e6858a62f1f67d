package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// PGResults are the scenarios run on PostgreSQL, several calsync replicas
// sharing one private server.
type PGResults struct {
	Version  string           `json:"postgres_version"`
	Settings string           `json:"postgres_settings"`
	Ingest   []PGIngestResult `json:"ingest"`
	PGBench  *PGBenchResult   `json:"pgbench,omitempty"`
	// Fanout is webhooks sent to replica A, watched on replica B.
	Fanout   *FanoutResult   `json:"cross_replica_fanout,omitempty"`
	Failover *FailoverResult `json:"failover,omitempty"`
}

// PGIngestResult is closed-loop ingestion spread over replicas of one
// PostgreSQL database. Server sums the replicas' CPU (and their RSS at the
// end); Postgres is the database server's CPU over the same time.
type PGIngestResult struct {
	IngestResult
	Replicas        int     `json:"replicas"`
	PGCPUPercent    float64 `json:"postgres_cpu_percent"`
	PGCPUPerWebhook float64 `json:"postgres_cpu_us_per_webhook"`
	Drained         bool    `json:"drained"`
	WAL             WALUse  `json:"wal"`
	// Log is the change log the run left and the cost of compacting it.
	Log *ChangeLogStats `json:"change_log,omitempty"`
}

// pgReplicas starts n calsync replicas on one database URL, each with its
// own Recall API URL when recallURLs is given (one per replica); with
// profileLast, the last one serves profiles on the run's -pprof address.
func (e *Env) pgReplicas(ctx context.Context, name, db string, n int, recallURLs []string, profileLast bool) ([]*Child, error) {
	var cs []*Child
	for i := range n {
		recall := e.Fake.URL
		if recallURLs != nil {
			recall = recallURLs[i]
		}
		o := CalsyncOptions{Bin: e.Bin, DB: db, LogDir: e.Dir, RecallURL: recall, RecallKey: e.Fake.APIKey()}
		if profileLast && i == n-1 {
			o.PprofAddr = e.Pprof
		}
		c, err := startCalsync(ctx, fmt.Sprintf("%s-%d", name, i), o)
		if err != nil {
			stopAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func stopAll(cs []*Child) {
	for _, c := range cs {
		c.Stop(10 * time.Second)
	}
}

func statsAll(cs []*Child) []ProcStats {
	out := make([]ProcStats, len(cs))
	for i, c := range cs {
		out[i] = c.Stats()
	}
	return out
}

// serverUseAll is serverUse summed over replicas: their CPU adds up, and
// PeakRSSMB is the sum of their RSS at the end.
func serverUseAll(cs []*Child, before []ProcStats, elapsed time.Duration, ops int64) Server {
	var sum Server
	for i, c := range cs {
		s := serverUse(c, before[i], elapsed, 0, ops)
		sum.CPUPercent += s.CPUPercent
		sum.CPUPerOp += s.CPUPerOp
		sum.PeakRSSMB += s.PeakRSSMB
		sum.ClientCPUPercent = s.ClientCPUPercent
	}
	return sum
}

// pgIngest runs closed-loop ingestion, the same workload as the SQLite
// scenario, spread over n replicas of a fresh PostgreSQL database, and
// waits until every delivery is processed (the inbox holds nothing
// pending) whatever the profile.
func (e *Env) pgIngest(ctx context.Context, pg *pgServer, n int) (PGIngestResult, error) {
	name := fmt.Sprintf("postgres, %d replica", n)
	if n > 1 {
		name += "s"
	}
	res := PGIngestResult{Replicas: n}
	res.Name = name
	db, err := pg.newDatabase(ctx, fmt.Sprintf("ingest-%d", n))
	if err != nil {
		return res, err
	}
	cs, err := e.pgReplicas(ctx, fmt.Sprintf("pg-ingest-%d", n), db, n, nil, false)
	if err != nil {
		return res, err
	}
	defer stopAll(cs)
	w := NewWorkload(200, 50)
	w.RecallCalendars, w.RecallEvery = e.FakeCalendars, 20
	var bases []string
	for _, c := range cs {
		bases = append(bases, "http://"+c.HTTPAddr)
	}
	p := NewSpreadPoster(bases, e.Profile.Conns)
	// A short warm-up opens the connections and creates the calendars.
	w.Run(ctx, p, LoadSpec{Conns: e.Profile.Conns, Duration: time.Second})
	if _, err := waitDrained(ctx, cs[0], 2*time.Minute); err != nil {
		return res, err
	}
	before, pgBefore, walBefore := statsAll(cs), pg.CPU(), pg.WAL(ctx)
	start := time.Now()
	res.Load = w.Run(ctx, p, LoadSpec{Conns: e.Profile.Conns, Duration: e.Profile.Duration})
	elapsed := time.Since(start)
	pgCPU := pg.CPU() - pgBefore
	res.WAL = walUse(walBefore, pg.WAL(ctx), elapsed, res.Load.OK)
	res.Server = serverUseAll(cs, before, elapsed, res.Load.OK)
	res.PGCPUPercent = 100 * pgCPU.Seconds() / elapsed.Seconds()
	if res.Load.OK > 0 {
		res.PGCPUPerWebhook = float64(pgCPU.Microseconds()) / float64(res.Load.OK)
	}
	drain, err := waitDrained(ctx, cs[0], 2*time.Minute)
	res.DrainSeconds = drain.Seconds()
	res.ProcessedPerS = float64(res.Load.OK) / time.Since(start).Seconds()
	res.Drained = err == nil
	res.Dead = countDeliveries(ctx, cs[0], calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	if err == nil {
		if st, lerr := measureChangeLog(ctx, pg, db); lerr != nil {
			log.Printf("%s: change log: %v", name, lerr)
		} else {
			res.Log = &st
			log.Printf("%s: change log %d changes, %.0f bytes each (inbox %.0f bytes/delivery); compacting %d took %.2f s (%.0f µs each, PostgreSQL CPU %.0f µs each), VACUUM %.2f s",
				name, st.Changes, st.BytesPerChange, st.BytesPerDelivery, st.Compacted, st.CompactSeconds, st.CompactUSPerChange, st.PGCPUPerChange, st.VacuumSeconds)
		}
	}
	log.Printf("%s: %.0f webhooks/s, answer p50 %.2f ms p99 %.2f ms, calsync CPU %.0f%% (%.0f µs/webhook), PostgreSQL CPU %.0f%% (%.0f µs/webhook), WAL %.0f bytes/webhook, %.1f webhooks per WAL flush, processed %.0f/s (drain %.1f s), %d errors",
		name, res.Load.Throughput, res.Load.Answer.P50, res.Load.Answer.P99, res.Server.CPUPercent, res.Server.CPUPerOp,
		res.PGCPUPercent, res.PGCPUPerWebhook, res.WAL.BytesPerOp, res.WAL.OpsPerSync, res.ProcessedPerS, res.DrainSeconds, res.Load.Errors)
	if err != nil {
		// The figures so far are kept; the error says processing fell behind.
		return res, err
	}
	return res, nil
}

// pgFanout sends webhooks at the profile's rate to replica A and watches
// them on replica B: a change committed through one replica must reach
// another's watchers.
func (e *Env) pgFanout(ctx context.Context, pg *pgServer) (FanoutResult, error) {
	db, err := pg.newDatabase(ctx, "fanout")
	if err != nil {
		return FanoutResult{}, err
	}
	// Replica B serves the watchers: the profile of the run is its.
	cs, err := e.pgReplicas(ctx, "pg-fanout", db, 2, nil, true)
	if err != nil {
		return FanoutResult{}, err
	}
	defer stopAll(cs)
	p := e.Profile
	return e.fanoutAcross(ctx, cs[0], cs[1], "postgres A→B", p.PGFanoutRate, p.PGFilteredStreams, p.PGUnfilteredStreams, p.Duration, true)
}

// FailoverResult is how long work held by a replica killed with SIGKILL
// takes to complete on another replica.
type FailoverResult struct {
	Replicas int `json:"replicas"`
	// Work says what the killed replica held.
	Work string `json:"work"`
	// Holder is the index of the replica that held the work (and was
	// killed); TakenBy is the one whose Recall request followed.
	Holder  int `json:"holder"`
	TakenBy int `json:"taken_by"`
	// TakeoverSeconds is kill → another replica's first request to Recall
	// for the work; CompletedSeconds is kill → the work's result visible in
	// the store and no delivery pending.
	TakeoverSeconds  float64 `json:"takeover_s"`
	CompletedSeconds float64 `json:"completed_s"`
	Completed        bool    `json:"completed"`
	// Deadline is how long the scenario waited.
	DeadlineSeconds float64 `json:"deadline_s"`
}

// recallTap is a reverse proxy in front of the fake Recall API for one
// replica, so the tool knows which replica asked Recall for what, and when.
type recallTap struct {
	replica int
	srv     *httptest.Server
}

// tapLog records event-list requests to Recall by replica.
type tapLog struct {
	mu   sync.Mutex
	reqs []tapRequest
	// arrived is signalled (without blocking) on every request.
	arrived chan struct{}
}

type tapRequest struct {
	replica int
	at      time.Time
}

func (l *tapLog) since(t time.Time, except int) (tapRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reqs {
		if !r.at.Before(t) && r.replica != except {
			return r, true
		}
	}
	return tapRequest{}, false
}

func newRecallTaps(fakeURL string, n int, lg *tapLog) ([]*recallTap, error) {
	target, err := url.Parse(fakeURL)
	if err != nil {
		return nil, err
	}
	var taps []*recallTap
	for i := range n {
		proxy := httputil.NewSingleHostReverseProxy(target)
		// A replica killed mid-request cancels its request: expected here,
		// so not logged.
		proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
		taps = append(taps, &recallTap{replica: i, srv: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if endpointOf(r.URL.Path) == recalltest.EndpointEventList {
				lg.mu.Lock()
				lg.reqs = append(lg.reqs, tapRequest{replica: i, at: time.Now()})
				lg.mu.Unlock()
				select {
				case lg.arrived <- struct{}{}:
				default:
				}
			}
			proxy.ServeHTTP(w, r)
		}))})
	}
	return taps, nil
}

// pgFailover starts three replicas, each reaching the fake Recall API
// through a tap of its own, and makes one replica hold work: a Recall hint
// whose event listing the fake holds back. It kills that replica with
// SIGKILL and times how long the work takes to complete elsewhere: another
// replica lists the events and the changed event is in the store, with no
// delivery left pending. The default lease TTL (10 s) bounds it; the target
// is 20 s.
func (e *Env) pgFailover(ctx context.Context, pg *pgServer) (FailoverResult, error) {
	const replicas = 3
	deadline := 60 * time.Second
	res := FailoverResult{Replicas: replicas, Work: "a Recall hint whose event listing Recall holds back", Holder: -1, TakenBy: -1, DeadlineSeconds: deadline.Seconds()}
	db, err := pg.newDatabase(ctx, "failover")
	if err != nil {
		return res, err
	}
	lg := &tapLog{arrived: make(chan struct{}, 1)}
	taps, err := newRecallTaps(e.Fake.URL, replicas, lg)
	if err != nil {
		return res, err
	}
	var tapURLs []string
	for _, t := range taps {
		tapURLs = append(tapURLs, t.srv.URL)
		defer t.srv.Close()
	}
	cs, err := e.pgReplicas(ctx, "pg-failover", db, replicas, tapURLs, false)
	if err != nil {
		return res, err
	}
	defer stopAll(cs)
	cal := e.FakeCalendars[0]
	// First sync the calendar normally, so the timed work is a plain
	// re-sync.
	p := NewPoster("http://"+cs[0].HTTPAddr, 1)
	if st, err := p.RecallHint(ctx, cal); err != nil || st != http.StatusOK {
		return res, fmt.Errorf("first hint: status %d, %v", st, err)
	}
	if _, err := waitDrained(ctx, cs[0], time.Minute); err != nil {
		return res, err
	}
	// Change an event at Recall, hold the next event listing back, and
	// hint: the replica that lists is stuck holding the work.
	ev := e.Fake.Events(cal)[0]
	title := "failover " + strconv.FormatInt(time.Now().UnixNano(), 36)
	e.Fake.UpdateEvent(ev.ID, func(x *Event) {
		raw := map[string]any{}
		for k, v := range x.Raw {
			raw[k] = v
		}
		raw["summary"] = title
		x.Raw = raw
	})
	block := make(chan struct{})
	defer close(block)
	e.Fake.Inject(recalltest.Fault{Endpoint: recalltest.EndpointEventList, Count: 1, Block: block})
	hinted := time.Now()
	if st, err := p.RecallHint(ctx, cal); err != nil || st != http.StatusOK {
		return res, fmt.Errorf("hint: status %d, %v", st, err)
	}
	held, ok := waitTap(ctx, lg, hinted, -1, 30*time.Second)
	if !ok {
		return res, errors.New("no replica asked Recall for the events within 30 s of the hint")
	}
	res.Holder = held.replica
	cs[held.replica].Kill()
	killed := time.Now()
	log.Printf("failover: replica %d held the Recall sync; killed", held.replica)
	survivor := cs[(held.replica+1)%replicas]
	if took, ok := waitTap(ctx, lg, killed, held.replica, deadline); ok {
		res.TakenBy = took.replica
		res.TakeoverSeconds = took.at.Sub(killed).Seconds()
	}
	for time.Since(killed) < deadline && ctx.Err() == nil {
		if hasTitle(ctx, survivor, ev.ID, title) && countDeliveries(ctx, survivor, calsyncv1.DeliveryState_DELIVERY_STATE_PENDING) == 0 {
			res.Completed = true
			res.CompletedSeconds = time.Since(killed).Seconds()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Printf("failover: replica %d took over after %.1f s; work completed %v after %.1f s (target 20 s)",
		res.TakenBy, res.TakeoverSeconds, res.Completed, res.CompletedSeconds)
	if !res.Completed {
		return res, fmt.Errorf("failover: the killed replica's work did not complete within %v", deadline)
	}
	return res, nil
}

// waitTap waits for an event-list request to Recall at or after t from a
// replica other than except.
func waitTap(ctx context.Context, lg *tapLog, t time.Time, except int, timeout time.Duration) (tapRequest, bool) {
	end := time.After(timeout)
	for {
		if r, ok := lg.since(t, except); ok {
			return r, true
		}
		select {
		case <-lg.arrived:
		case <-end:
			return tapRequest{}, false
		case <-ctx.Done():
			return tapRequest{}, false
		}
	}
}

// hasTitle reports whether c's store holds Recall event id with title.
func hasTitle(ctx context.Context, c *Child, id, title string) bool {
	conn := grpcConn(c)
	defer conn.Close()
	tok := ""
	for {
		resp, err := calsyncv1.NewCalendarServiceClient(conn).ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-", PageSize: 1000, PageToken: tok})
		if err != nil {
			return false
		}
		for _, ev := range resp.GetEvents() {
			if ev.GetProvider() == "recall" && ev.GetProviderEventId() == id {
				return ev.GetTitle() == title
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return false
		}
	}
}

// postgres runs the PostgreSQL scenarios o selects on one private server,
// recording failures in res.
func (e *Env) postgres(ctx context.Context, o RunOptions, res *Results) *PGResults {
	pg, err := startPostgres(ctx)
	if err != nil {
		res.fail("postgres", err)
		return nil
	}
	defer func() {
		if err := pg.Stop(); err != nil {
			log.Printf("postgres: stop: %v", err)
		}
	}()
	out := &PGResults{Version: pg.Version, Settings: pg.Settings}
	log.Printf("postgres: PostgreSQL %s (%s) in %s", pg.Version, pg.Settings, pg.srv.Dir)
	if o.runs("pg-ingest") {
		for _, n := range []int{1, 3} {
			r, err := e.pgIngest(ctx, pg, n)
			if err != nil {
				res.fail(r.Name, err)
			}
			if r.Load.OK > 0 {
				out.Ingest = append(out.Ingest, r)
			}
		}
		// PostgreSQL's own single-row insert rate, in the same run and for
		// as long (5 s at least), with as many clients as the ingestion has
		// connections.
		if r, err := runPGBench(ctx, pg, e.Profile.Conns, 2, max(e.Profile.Duration, minPGBenchRun), e.Dir); err != nil {
			res.fail("pgbench", err)
		} else {
			out.PGBench = &r
			log.Printf("pgbench: %.0f single-row inserts/s (%d clients), latency avg %.2f ms, PostgreSQL CPU %.0f%% (%.0f µs/row), WAL %.0f bytes/row, %.1f rows per WAL flush",
				r.TPS, r.Clients, r.LatencyAvgMS, r.PGCPUPercent, r.PGCPUPerRow, r.WAL.BytesPerOp, r.WAL.OpsPerSync)
		}
	}
	if o.runs("pg-fanout") {
		if r, err := e.pgFanout(ctx, pg); err != nil {
			res.fail("postgres cross-replica fan-out", err)
		} else {
			out.Fanout = &r
		}
	}
	if o.runs("pg-failover") {
		r, err := e.pgFailover(ctx, pg)
		if err != nil {
			res.fail("postgres failover", err)
		}
		if r.Holder >= 0 {
			out.Failover = &r
		}
	}
	return out
}
