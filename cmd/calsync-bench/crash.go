package main

import (
	"context"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// CrashResult is the outcome of `calsync-bench crash`.
type CrashResult struct {
	Started    time.Time `json:"started"`
	Cycles     int       `json:"cycles"`
	Acked      int64     `json:"acked"`
	Lost       int64     `json:"lost"`
	Duplicated int64     `json:"duplicated"`
	Streams    int       `json:"streams"`
	Compared   int       `json:"events_compared"`
	Diverged   int       `json:"diverged"`
	Dead       int       `json:"dead_lettered"`
	// Missing counts versions some resumed stream never delivered.
	Missing    int64     `json:"stream_missing"`
	Restarts   int64     `json:"stream_restarts"`
	Failures   []string  `json:"failures,omitempty"`
	KillAfterS []float64 `json:"kill_after_s"`
}

// runCrash kills calsync with SIGKILL at random moments under webhook load
// and restarts it on the same database and addresses, cycles times. After
// every restart it checks that each webhook answered 200 is processed and
// in the store, that the resumed streams saw every change once and in
// order, and that the store equals the providers' truth (the load
// generator's versions for postpress, the fake Recall API for Recall).
func runCrash(ctx context.Context, bin string, cycles int, out string) error {
	env, err := newEnv(profiles["quick"], bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.Dir)
	defer env.Fake.Close()
	opts := CalsyncOptions{Bin: env.Bin, DB: filepath.Join(env.Dir, "crash.db"), LogDir: env.Dir,
		RecallURL: env.Fake.URL, RecallKey: env.Fake.APIKey(), GRPCAddr: freeAddr(), HTTPAddr: freeAddr()}
	res := &CrashResult{Started: time.Now().UTC()}
	c, err := startCalsync(ctx, "crash", opts)
	if err != nil {
		return err
	}
	w := NewWorkload(50, 10)
	w.RecallCalendars, w.RecallEvery = env.FakeCalendars, 10
	p := NewPoster("http://"+opts.HTTPAddr, 16)
	w.Run(ctx, p, LoadSpec{Conns: 16, OnePass: true})
	if _, err := waitDrained(ctx, c, time.Minute); err != nil {
		return err
	}
	ids, err := calendarIDs(ctx, c)
	if err != nil {
		return err
	}
	base := w.Versions()
	set := &WatchSet{}
	calOf := map[*Watcher]int{}
	for i := range 6 {
		set.Watchers = append(set.Watchers, NewWatcher(fmt.Sprintf("all-%d", i), nil, i >= 4, base))
	}
	for i := range 4 {
		wt := NewWatcher(fmt.Sprintf("cal-%d", i), []string{ids[w.CalendarOf(i*w.EventsPerCalendar)]}, i == 3, base)
		calOf[wt] = i
		set.Watchers = append(set.Watchers, wt)
	}
	if err := set.Start(ctx, opts.GRPCAddr, "http://"+opts.HTTPAddr, 2); err != nil {
		return err
	}
	defer set.Stop()
	res.Streams = len(set.Watchers)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for cycle := 1; cycle <= cycles && ctx.Err() == nil; cycle++ {
		// Load: postpress rewrites and Recall hints, while the fake Recall
		// calendars change underneath.
		lctx, stopLoad := context.WithCancel(ctx)
		loadDone := make(chan LoadResult, 1)
		go func() { loadDone <- w.Run(lctx, p, LoadSpec{Conns: 16}) }()
		go mutateRecall(lctx, env.Fake, rng.Int64())
		after := time.Duration(200+rng.IntN(2300)) * time.Millisecond
		time.Sleep(after)
		c.Kill()
		stopLoad()
		lr := <-loadDone
		res.Acked += lr.OK
		res.KillAfterS = append(res.KillAfterS, after.Seconds())
		if c, err = startCalsync(ctx, "crash", opts); err != nil {
			return fmt.Errorf("cycle %d: restart: %w", cycle, err)
		}
		// A last hint per Recall calendar covers changes made after the
		// last hint that was answered.
		for _, id := range env.FakeCalendars {
			for {
				if st, err := p.RecallHint(ctx, id); err == nil && st == 200 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		// Resend whatever was in flight at the kill, as the providers would.
		w.Run(ctx, p, LoadSpec{Conns: 16, OnePass: true, ResendOnly: true})
		if _, err := waitDrained(ctx, c, 3*time.Minute); err != nil {
			return fmt.Errorf("cycle %d: %w", cycle, err)
		}
		lost, compared, diverged, stored, err := compareTruth(ctx, c, w, env.Fake)
		if err != nil {
			return fmt.Errorf("cycle %d: %w", cycle, err)
		}
		want := func(wt *Watcher) map[string]int {
			if ci, ok := calOf[wt]; ok {
				return w.CalendarVersions(stored, ci)
			}
			return stored
		}
		caught := set.WaitCaught(want, time.Minute)
		chk := set.Check(want)
		res.Cycles, res.Lost, res.Compared, res.Diverged = cycle, res.Lost+lost, compared, diverged
		res.Duplicated, res.Missing, res.Restarts = chk.Duplicates, chk.Missing, chk.Restarts
		if !caught {
			res.Failures = append(res.Failures, fmt.Sprintf("cycle %d: streams did not catch up", cycle))
		}
		if diverged > 0 || lost > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("cycle %d: %d lost, %d events differ from the providers", cycle, lost, diverged))
		}
		log.Printf("cycle %d: killed after %v, %d acked so far; lost %d, duplicated %d, missing on streams %d, diverged %d/%d",
			cycle, after.Round(time.Millisecond), res.Acked, res.Lost, res.Duplicated, res.Missing, diverged, compared)
	}
	res.Dead = countDeliveries(ctx, c, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	c.Stop(10 * time.Second)
	if err := writeJSON(out, res); err != nil {
		return err
	}
	log.Printf("crash test: %d cycles, %d acked, %d lost, %d duplicated, %d missing on streams, %d diverged, %d dead-lettered",
		res.Cycles, res.Acked, res.Lost, res.Duplicated, res.Missing, res.Diverged, res.Dead)
	if res.Lost+res.Duplicated+res.Missing > 0 || res.Diverged > 0 || res.Dead != 0 || res.Cycles < cycles || len(res.Failures) > 0 {
		return fmt.Errorf("crash test failed: %v", res.Failures)
	}
	return nil
}

// mutateRecall changes fake Recall events (titles, and now and then a
// delete) until ctx is done, as a user editing calendars would.
func mutateRecall(ctx context.Context, fake *recalltest.Server, seed int64) {
	rng := rand.New(rand.NewPCG(uint64(seed), 11))
	for ctx.Err() == nil {
		evs := fake.Events("")
		e := evs[rng.IntN(len(evs))]
		if !e.IsDeleted {
			if rng.IntN(20) == 0 {
				fake.DeleteEvent(e.ID)
			} else {
				title := "Recall " + strconv.FormatInt(rng.Int64(), 36)
				fake.UpdateEvent(e.ID, func(ev *Event) {
					// The fake shares the map with its stored copy: write a
					// new one.
					ev.Raw = maps.Clone(ev.Raw)
					ev.Raw["summary"] = title
				})
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Event is the fake Recall API's event type.
type Event = recalltest.Event

// compareTruth lists every event calsync holds and compares it with the
// truth: postpress events must hold at least the version answered 200
// (lost otherwise), Recall events must equal the fake's. It returns the
// postpress versions stored.
func compareTruth(ctx context.Context, c *Child, w *Workload, fake *recalltest.Server) (lost int64, compared, diverged int, stored map[string]int, err error) {
	conn := grpcConn(c)
	defer conn.Close()
	cl := calsyncv1.NewCalendarServiceClient(conn)
	stored = map[string]int{}
	recallTitles := map[string]string{}
	recallDeleted := map[string]bool{}
	tok := ""
	for {
		resp, err := cl.ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-", IncludeDeleted: true, PageSize: 1000, PageToken: tok})
		if err != nil {
			return 0, 0, 0, nil, err
		}
		for _, ev := range resp.GetEvents() {
			switch ev.GetProvider() {
			case "postpress":
				if v, _, ok := parseTitle(ev.GetTitle()); ok {
					stored[ev.GetProviderEventId()] = v
				}
			case "recall":
				recallTitles[ev.GetProviderEventId()] = ev.GetTitle()
				recallDeleted[ev.GetProviderEventId()] = ev.GetDeleted()
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	for k, v := range w.Versions() {
		compared++
		if stored[k] < v {
			lost += int64(v - stored[k])
			diverged++
		}
	}
	for _, e := range fake.Events("") {
		compared++
		title, _ := e.Raw["summary"].(string)
		if got, ok := recallTitles[e.ID]; !ok || recallDeleted[e.ID] != e.IsDeleted || (!e.IsDeleted && got != title) {
			diverged++
			if diverged <= 3 {
				log.Printf("recall event %s: calsync has %q deleted=%v, Recall has %q deleted=%v", e.ID, got, recallDeleted[e.ID], title, e.IsDeleted)
			}
		}
	}
	return lost, compared, diverged, stored, nil
}
