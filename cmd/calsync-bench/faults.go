package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// Recall's documented rate limits, requests per minute per workspace.
var recallLimits = map[string]int{
	recalltest.EndpointCalendarRetrieve: 300,
	recalltest.EndpointEventList:        60,
	recalltest.EndpointEventRetrieve:    300,
}

// FaultResult is the outcome of `calsync-bench faults`.
type FaultResult struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Hints   int64     `json:"hints_sent"`
	Edits   int       `json:"recall_edits"`
	// Injected counts the faulty answers the fake gave, by kind.
	Injected map[string]int `json:"injected"`
	// MaxPerMinute is, per endpoint, the most requests in any 60-second
	// window; Limits is Recall's limit.
	MaxPerMinute map[string]int `json:"max_per_minute"`
	Limits       map[string]int `json:"limits"`
	Compared     int            `json:"events_compared"`
	Diverged     int            `json:"diverged"`
	Dead         int            `json:"dead_lettered"`
	ConvergeS    float64        `json:"converged_after_load_s"`
	Passed       bool           `json:"passed"`
}

// requestClock records when each request to each Recall endpoint arrived.
type requestClock struct {
	mu    sync.Mutex
	times map[string][]time.Time
}

func endpointOf(path string) string {
	switch {
	case path == "/api/v2/calendar-events/":
		return recalltest.EndpointEventList
	case strings.HasPrefix(path, "/api/v2/calendar-events/"):
		return recalltest.EndpointEventRetrieve
	case strings.HasPrefix(path, "/api/v2/calendars/"):
		return recalltest.EndpointCalendarRetrieve
	}
	return "other"
}

func (c *requestClock) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep := endpointOf(r.URL.Path)
		c.mu.Lock()
		c.times[ep] = append(c.times[ep], time.Now())
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// maxInWindow returns the most requests in any window of length d.
func maxInWindow(ts []time.Time, d time.Duration) int {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// runFaults drives Recall hints while the fake Recall API fails in every
// documented way, then checks that calsync converged to the fake's truth,
// dead-lettered nothing and never exceeded Recall's rate limits.
func runFaults(ctx context.Context, bin, out string) error {
	env, err := newEnv(profiles["quick"], bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.Dir)
	defer env.Fake.Close()
	clock := &requestClock{times: map[string][]time.Time{}}
	target, _ := url.Parse(env.Fake.URL)
	proxy := httptest.NewServer(clock.wrap(httputil.NewSingleHostReverseProxy(target)))
	defer proxy.Close()
	env.Fake.SetNextBaseURL(proxy.URL)
	c, err := startCalsync(ctx, "faults", CalsyncOptions{Bin: env.Bin, DB: filepath.Join(env.Dir, "faults.db"), LogDir: env.Dir,
		RecallURL: proxy.URL, RecallKey: env.Fake.APIKey()})
	if err != nil {
		return err
	}
	defer c.Stop(10 * time.Second)
	p := NewPoster("http://"+c.HTTPAddr, 8)
	res := &FaultResult{Started: time.Now().UTC(), Limits: recallLimits, MaxPerMinute: map[string]int{}}
	const loadFor = 70 * time.Second
	// The schedule of faults, from the start of the load.
	schedule := []struct {
		at time.Duration
		f  recalltest.Fault
	}{
		{2 * time.Second, recalltest.Fault{Count: 6, Status: http.StatusServiceUnavailable}},
		{6 * time.Second, recalltest.Fault{Count: 3, Status: http.StatusTooManyRequests, RetryAfter: 3 * time.Second}},
		{12 * time.Second, recalltest.Fault{Count: 2, Delay: 3 * time.Second}},
		{16 * time.Second, recalltest.Fault{Count: 1, Delay: 40 * time.Second}}, // past the client's 30 s timeout
		{20 * time.Second, recalltest.Fault{Count: 3, Truncate: true}},
		{26 * time.Second, recalltest.Fault{Count: 3, Status: http.StatusBadGateway}},
		{30 * time.Second, recalltest.Fault{Count: 2, Status: http.StatusGatewayTimeout}},
		{34 * time.Second, recalltest.Fault{Count: 1, Status: 507}},
		{40 * time.Second, recalltest.Fault{Count: 2, Status: http.StatusConflict}},
		{46 * time.Second, recalltest.Fault{Count: 8, Status: http.StatusTooManyRequests, RetryAfter: 5 * time.Second}},
		{52 * time.Second, recalltest.Fault{Count: 10, Status: http.StatusInternalServerError}},
	}
	lctx, stop := context.WithTimeout(ctx, loadFor)
	defer stop()
	start := time.Now()
	go func() {
		for _, s := range schedule {
			select {
			case <-lctx.Done():
				return
			case <-time.After(time.Until(start.Add(s.at))):
				env.Fake.Inject(s.f)
			}
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() { mutateRecall(lctx, env.Fake, 42) })
	rng := rand.New(rand.NewPCG(9, 9))
	for lctx.Err() == nil {
		cal := env.FakeCalendars[rng.IntN(len(env.FakeCalendars))]
		if st, err := p.RecallHint(lctx, cal); err == nil && st == http.StatusOK {
			res.Hints++
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	loadEnd := time.Now()
	env.Fake.ClearFaults()
	// A last hint per calendar, as Recall sends after the last change.
	for _, cal := range env.FakeCalendars {
		if st, err := p.RecallHint(ctx, cal); err == nil && st == http.StatusOK {
			res.Hints++
		}
	}
	if _, err := waitDrained(ctx, c, 5*time.Minute); err != nil {
		return err
	}
	res.ConvergeS = time.Since(loadEnd).Seconds()
	res.Seconds = time.Since(start).Seconds()
	_, res.Compared, res.Diverged, _, err = compareTruth(ctx, c, NewWorkload(0, 1), env.Fake)
	if err != nil {
		return err
	}
	res.Dead = countDeliveries(ctx, c, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	res.Injected = map[string]int{}
	for _, r := range env.Fake.RequestLog() {
		switch {
		case r.Status == 0:
			res.Injected["timeout (client gave up)"]++
		case r.Status >= 400:
			res.Injected[fmt.Sprint(r.Status)]++
		}
	}
	res.Edits = len(env.Fake.Events(""))
	res.Passed = res.Diverged == 0 && res.Dead == 0
	clock.mu.Lock()
	for ep, ts := range clock.times {
		res.MaxPerMinute[ep] = maxInWindow(ts, time.Minute)
		if l, ok := recallLimits[ep]; ok && res.MaxPerMinute[ep] > l {
			res.Passed = false
		}
	}
	clock.mu.Unlock()
	if err := writeJSON(out, res); err != nil {
		return err
	}
	log.Printf("faults: injected %v; converged %.1f s after the load; %d/%d events differ; %d dead-lettered; max requests/min %v (limits %v)",
		res.Injected, res.ConvergeS, res.Diverged, res.Compared, res.Dead, res.MaxPerMinute, recallLimits)
	if !res.Passed {
		return fmt.Errorf("fault injection run failed")
	}
	return nil
}

func writeFaultsMarkdown(b *bytes.Buffer, f *FaultResult) {
	var inj []string
	for k, v := range f.Injected {
		inj = append(inj, fmt.Sprintf("%s×%d", k, v))
	}
	slices.Sort(inj)
	var rates []string
	for ep, n := range f.MaxPerMinute {
		if l, ok := f.Limits[ep]; ok {
			rates = append(rates, fmt.Sprintf("%s %d/min (limit %d)", ep, n, l))
		}
	}
	slices.Sort(rates)
	fmt.Fprintf(b, "### Fault injection (`make fault-test`)\n\n%s, %.0f s: %d signed hints while the fake Recall API answered %s. "+
		"Converged %.1f s after the load; %d events compared with Recall, %d differ; %d dead-lettered. Busiest minute: %s. %s\n\n",
		f.Started.Format(time.RFC3339), f.Seconds, f.Hints, strings.Join(inj, ", "), f.ConvergeS, f.Compared, f.Diverged, f.Dead, strings.Join(rates, ", "), map[bool]string{true: "**Passed.**", false: "**Failed.**"}[f.Passed])
}
