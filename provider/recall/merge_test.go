package recall_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// gatedClock is a client clock whose sleeps wait for the test: each sleep
// announces itself on sleeping and returns once its release is closed (or
// its ctx ends), so a test decides when the rate limiter lets a request
// through.
type gatedClock struct {
	fakeClock
	sleeping chan sleeper
}

type sleeper struct {
	d       time.Duration
	release chan struct{}
}

func (c *gatedClock) Sleep(ctx context.Context, d time.Duration) error {
	s := sleeper{d: d, release: make(chan struct{})}
	select {
	case c.sleeping <- s:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-s.release:
		return c.fakeClock.Sleep(ctx, d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mergeFixture is a workspace of calendars on the fake and a client
// whose event listings wait for the test at the rate limiter.
type mergeFixture struct {
	srv    *recalltest.Server
	c      *recall.Client
	clk    *gatedClock
	joined chan struct{}
	t0     time.Time // every event was updated at or after t0
}

func newMergeFixture(t *testing.T) *mergeFixture {
	t.Helper()
	t0 := time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)
	f := &mergeFixture{
		srv:    recalltest.New(t, recalltest.WithNow(t0)),
		clk:    &gatedClock{fakeClock: fakeClock{now: t0}, sleeping: make(chan sleeper)},
		joined: make(chan struct{}, 16),
		t0:     t0,
	}
	// A burst of one: every listing after the first waits for the limiter.
	f.c = recall.NewClient(f.srv.URL, f.srv.APIKey(), recall.WithHTTPClient(f.srv.Client()),
		recall.WithClock(f.clk.Now, f.clk.Sleep), recall.WithRateLimit(recall.EndpointEventList, 60, 1))
	f.c.OnListingJoined(func() { f.joined <- struct{}{} })
	return f
}

// spendBurst takes the limiter's only token with a full listing, which is
// never merged, so that the next listing waits.
func (f *mergeFixture) spendBurst(t *testing.T, calendarID string) {
	t.Helper()
	if err := f.c.ListEvents(t.Context(), calendarID, time.Time{}, func([]recall.Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// result is what one ListEvents call saw.
type result struct {
	events      []recall.Event
	beforeAfter int // requests the fake had answered when the before function ran
	err         error
}

// list starts a listing of calendarID from since, with fn's error (if
// any) for its first page; the result arrives on the returned channel.
func (f *mergeFixture) list(ctx context.Context, calendarID string, since time.Time, fail error) <-chan result {
	out := make(chan result, 1)
	go func() {
		var r result
		r.beforeAfter = -1
		r.err = f.c.ListEvents(ctx, calendarID, since, func(evs []recall.Event) error {
			r.events = append(r.events, evs...)
			return fail
		}, recall.BeforeFirstRequest(func() { r.beforeAfter = len(f.srv.RequestLog()) }))
		out <- r
	}()
	return out
}

func checkEvents(t *testing.T, who string, r result, calendarID string, want int) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v", who, r.err)
	}
	if len(r.events) != want {
		t.Errorf("%s got %d events, want %d", who, len(r.events), want)
	}
	seen := map[string]bool{}
	for _, e := range r.events {
		if e.CalendarID != calendarID || seen[e.ID] {
			t.Errorf("%s got event %s of calendar %s (seen before: %v)", who, e.ID, e.CalendarID, seen[e.ID])
		}
		seen[e.ID] = true
	}
}

// TestListingsWaitingTogetherAreMerged: listings of two calendars that
// wait for the rate limit together go out as one listing of the
// workspace, from the older watermark, and each gets exactly its own
// calendar's events; a listing whose watermark lies beyond the merge
// horizon goes out alone.
func TestListingsWaitingTogetherAreMerged(t *testing.T) {
	f := newMergeFixture(t)
	a := f.srv.PutCalendar(recalltest.Calendar{})
	b := f.srv.PutCalendar(recalltest.Calendar{})
	other := f.srv.PutCalendar(recalltest.Calendar{})
	quiet := f.srv.PutCalendar(recalltest.Calendar{})
	addEvents(f.srv, a.ID, 4)
	addEvents(f.srv, b.ID, 3)
	addEvents(f.srv, other.ID, 5)
	addEvents(f.srv, quiet.ID, 2)
	f.spendBurst(t, other.ID)

	ra := f.list(t.Context(), a.ID, f.t0, nil)
	leader := <-f.clk.sleeping // a leads, and waits for the limiter
	rb := f.list(t.Context(), b.ID, f.t0.Add(time.Minute), nil)
	<-f.joined
	rq := f.list(t.Context(), quiet.ID, f.t0.Add(-time.Hour), nil)
	alone := <-f.clk.sleeping // beyond the horizon: a group of its own
	// The groups go out one after the other, so that each before function
	// can be placed among the requests.
	close(leader.release)
	got := map[string]result{"a": <-ra, "b": <-rb}
	close(alone.release)
	got["quiet"] = <-rq
	checkEvents(t, "a", got["a"], a.ID, 4)
	checkEvents(t, "b", got["b"], b.ID, 3)
	checkEvents(t, "quiet", got["quiet"], quiet.ID, 2)
	for who, want := range map[string]int{"a": 1, "b": 1, "quiet": 2} {
		if r := got[who]; r.beforeAfter != want {
			t.Errorf("%s's before function ran after %d requests, want %d (right before its listing's)", who, r.beforeAfter, want)
		}
	}

	log := f.srv.RequestLog()
	if len(log) != 3 {
		t.Fatalf("%d requests, want 3 (the full listing, the merged one, the quiet calendar's)", len(log))
	}
	var merged, single int
	for _, r := range log[1:] {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		switch q.Get("calendar_id") {
		case "":
			merged++
			if want := f.t0.Format(time.RFC3339Nano); q.Get("updated_at__gte") != want {
				t.Errorf("merged listing %s: want updated_at__gte=%s, the older watermark", r.URL, want)
			}
		case quiet.ID:
			single++
		default:
			t.Errorf("unexpected listing %s", r.URL)
		}
	}
	if merged != 1 || single != 1 {
		t.Errorf("%d merged and %d single listings, want one of each", merged, single)
	}
}

// TestMergedListingOutlivesAMembersFailure: a member whose callback fails
// gets its error and no more pages; the other still gets every page of
// its calendar, across pages the failed one's events shared.
func TestMergedListingOutlivesAMembersFailure(t *testing.T) {
	f := newMergeFixture(t)
	a := f.srv.PutCalendar(recalltest.Calendar{})
	b := f.srv.PutCalendar(recalltest.Calendar{})
	for range 75 { // interleaved, 300 events: three pages each holding both
		addEvents(f.srv, a.ID, 2)
		addEvents(f.srv, b.ID, 2)
	}
	f.spendBurst(t, f.srv.PutCalendar(recalltest.Calendar{}).ID)

	stop := errors.New("cannot apply")
	ra := f.list(t.Context(), a.ID, f.t0, stop)
	s := <-f.clk.sleeping
	rb := f.list(t.Context(), b.ID, f.t0, nil)
	<-f.joined
	close(s.release)
	// The next pages wait for the limiter too.
	for range 2 {
		close((<-f.clk.sleeping).release)
	}

	gotA, gotB := <-ra, <-rb
	if !errors.Is(gotA.err, stop) || len(gotA.events) == 0 || len(gotA.events) >= 150 {
		t.Errorf("failing member: %d events, err %v; want its first page's share and its own error", len(gotA.events), gotA.err)
	}
	checkEvents(t, "b", gotB, b.ID, 150)
	if n := len(f.srv.RequestLog()); n != 1+3 {
		t.Errorf("%d requests, want 4 (the full listing, the merged one's three pages)", n)
	}
}

// TestMergedListingWhenMembersLeave: a member whose ctx ends while the
// group waits for the limiter gets its ctx's error and the others their
// pages; once every member has left, nothing is sent.
func TestMergedListingWhenMembersLeave(t *testing.T) {
	f := newMergeFixture(t)
	a := f.srv.PutCalendar(recalltest.Calendar{})
	b := f.srv.PutCalendar(recalltest.Calendar{})
	addEvents(f.srv, a.ID, 3)
	addEvents(f.srv, b.ID, 3)
	f.spendBurst(t, a.ID)

	// The leader leaves; the listing still runs for the other member.
	ctxA, cancelA := context.WithCancel(t.Context())
	ra := f.list(ctxA, a.ID, f.t0, nil)
	s := <-f.clk.sleeping
	rb := f.list(t.Context(), b.ID, f.t0, nil)
	<-f.joined
	cancelA()
	close(s.release)
	if r := <-ra; !errors.Is(r.err, context.Canceled) || len(r.events) != 0 {
		t.Errorf("member that left: %d events, err %v; want none and context.Canceled", len(r.events), r.err)
	}
	checkEvents(t, "b", <-rb, b.ID, 3)

	// Every member leaves while waiting: no request goes out.
	before := len(f.srv.RequestLog())
	ctx1, cancel1 := context.WithCancel(t.Context())
	ctx2, cancel2 := context.WithCancel(t.Context())
	r1 := f.list(ctx1, a.ID, f.t0, nil)
	<-f.clk.sleeping
	r2 := f.list(ctx2, b.ID, f.t0, nil)
	<-f.joined
	var wg sync.WaitGroup
	for _, cancel := range []context.CancelFunc{cancel1, cancel2} {
		wg.Go(cancel)
	}
	wg.Wait()
	for i, r := range []result{<-r1, <-r2} {
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("member %d: err %v, want context.Canceled", i, r.err)
		}
	}
	if n := len(f.srv.RequestLog()); n != before {
		t.Errorf("%d requests sent after every member left", n-before)
	}
}

// TestListingMergingOff: with merging off, listings waiting together go
// out one by one, each naming its calendar.
func TestListingMergingOff(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithNow(time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)))
	a := srv.PutCalendar(recalltest.Calendar{})
	b := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, a.ID, 2)
	addEvents(srv, b.ID, 2)
	c, _ := newClient(t, srv, recall.WithListMerging(0))
	since := time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for _, id := range []string{a.ID, b.ID} {
		wg.Go(func() {
			if err := c.ListEvents(t.Context(), id, since, func([]recall.Event) error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, r := range srv.RequestLog() {
		if !strings.Contains(r.URL, "calendar_id=") {
			t.Errorf("listing %s names no calendar", r.URL)
		}
	}
}
