package recall_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// fakeClock is the client's clock in tests: sleeping advances it at once.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
	return nil
}

func (c *fakeClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

func newClient(tb testing.TB, srv *recalltest.Server, opts ...recall.ClientOption) (*recall.Client, *fakeClock) {
	tb.Helper()
	clk := &fakeClock{now: time.Date(2026, 1, 20, 12, 0, 0, 0, time.UTC)}
	base := []recall.ClientOption{
		recall.WithHTTPClient(srv.Client()),
		recall.WithClock(clk.Now, clk.Sleep),
	}
	return recall.NewClient(srv.URL, srv.APIKey(), append(base, opts...)...), clk
}

func addEvents(srv *recalltest.Server, calendarID string, n int) {
	start := time.Date(2026, 1, 21, 9, 0, 0, 0, time.UTC)
	for i := range n {
		srv.PutEvent(recalltest.Google(fmt.Sprintf("g%03d", i)).
			Summary(fmt.Sprintf("Event %d", i)).
			Timed(start.Add(time.Duration(i)*time.Hour), start.Add(time.Duration(i)*time.Hour+30*time.Minute), "UTC").
			Event(calendarID))
		srv.Advance(time.Second)
	}
}

func TestListEventsPaging(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithNow(time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)))
	cal := srv.PutCalendar(recalltest.Calendar{PlatformEmail: "a@example.com"})
	other := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 250)
	addEvents(srv, other.ID, 3)
	c, _ := newClient(t, srv)

	var pages []int
	seen := map[string]bool{}
	err := c.ListEvents(t.Context(), cal.ID, time.Time{}, func(evs []recall.Event) error {
		pages = append(pages, len(evs))
		for _, e := range evs {
			if e.CalendarID != cal.ID || seen[e.ID] {
				t.Errorf("unexpected event %s on %s", e.ID, e.CalendarID)
			}
			seen[e.ID] = true
			if len(e.Document) == 0 || len(e.Raw) == 0 {
				t.Errorf("event %s without document or raw", e.ID)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pages) != "[100 100 50]" || len(seen) != 250 {
		t.Fatalf("pages = %v, %d events", pages, len(seen))
	}
	log := srv.RequestLog()
	if len(log) != 3 {
		t.Fatalf("%d requests, want 3", len(log))
	}
	if !strings.Contains(log[0].URL, "calendar_id="+cal.ID) || strings.Contains(log[0].URL, "updated_at__gte") {
		t.Errorf("first URL = %s", log[0].URL)
	}
	for _, r := range log[1:] {
		if !strings.Contains(r.URL, "cursor=") {
			t.Errorf("page URL %s does not follow next", r.URL)
		}
	}
}

// TestListEventsBeforeFirstRequest: the callback runs after the rate
// limiter's wait and before each attempt at the first page, and not for the
// pages after it.
func TestListEventsBeforeFirstRequest(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithNow(time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)))
	cal := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 150) // two pages
	// A burst of one: every request after the first waits for the limiter.
	c, clk := newClient(t, srv, recall.WithRateLimit(recall.EndpointEventList, 2, 1))
	type call struct {
		page     bool
		requests int           // requests the fake had answered
		slept    time.Duration // the client's waits so far
	}
	list := func() []call {
		var calls []call
		err := c.ListEvents(t.Context(), cal.ID, time.Time{}, func([]recall.Event) error {
			calls = append(calls, call{page: true, requests: len(srv.RequestLog()), slept: clk.Slept()})
			return nil
		}, recall.BeforeFirstRequest(func() {
			calls = append(calls, call{requests: len(srv.RequestLog()), slept: clk.Slept()})
		}))
		if err != nil {
			t.Fatal(err)
		}
		return calls
	}
	got := list()
	if len(got) != 3 || got[0].page || got[0].requests != 0 || !got[1].page || !got[2].page {
		t.Fatalf("first listing: %+v, want the callback before any request, then two pages", got)
	}
	srv.ResetRequests()
	srv.RateLimitNext(1, time.Second)
	before := clk.Slept()
	got = list()
	if len(got) != 4 || got[0].page || got[1].page || !got[2].page || !got[3].page {
		t.Fatalf("listing after a 429: %+v, want the callback twice (once per attempt at the first page), then two pages", got)
	}
	if got[0].slept <= before || got[0].requests != 0 {
		t.Errorf("first callback %+v: want it after the limiter's wait (slept %v before the listing) and before any request", got[0], before)
	}
	if got[1].slept <= got[0].slept || got[1].requests != 1 {
		t.Errorf("second callback %+v: want it after the 429 was answered and the retry's wait", got[1])
	}
}

func TestListEventsUpdatedSince(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithNow(time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)))
	cal := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 10) // updated 08:00:00 .. 08:00:09
	c, _ := newClient(t, srv)
	var n int
	since := time.Date(2026, 1, 20, 8, 0, 7, 0, time.UTC)
	if err := c.ListEvents(t.Context(), cal.ID, since, func(evs []recall.Event) error { n += len(evs); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d events updated since %s, want 3", n, since)
	}
	if u := srv.RequestLog()[0].URL; !strings.Contains(u, "updated_at__gte=2026-01-20T08%3A00%3A07Z") {
		t.Errorf("URL = %s", u)
	}
}

func TestListEventsRefusesForeignNext(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithPageSize(2))
	cal := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 5)
	srv.SetNextBaseURL("http://attacker.example")
	c, _ := newClient(t, srv)
	err := c.ListEvents(t.Context(), cal.ID, time.Time{}, func([]recall.Event) error { return nil })
	if err == nil || !recall.IsPermanent(err) {
		t.Fatalf("ListEvents = %v, want a permanent error", err)
	}
	if n := srv.Requests(""); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestListEventsCallbackError(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithPageSize(2))
	cal := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 5)
	c, _ := newClient(t, srv)
	stop := errors.New("stop")
	if err := c.ListEvents(t.Context(), cal.ID, time.Time{}, func([]recall.Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ListEvents = %v, want the callback's error", err)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		inject    func(*recalltest.Server)
		wantReqs  int
		wantSlept time.Duration // at least
	}{
		{"OK", func(*recalltest.Server) {}, 1, 0},
		{"RetryAfterHonoured", func(s *recalltest.Server) { s.RateLimitNext(2, 7*time.Second) }, 3, 14 * time.Second},
		{"ServerErrorBurst", func(s *recalltest.Server) {
			s.FailNext(1, 500)
			s.FailNext(1, 502)
			s.FailNext(1, 503)
			s.FailNext(1, 504)
		}, 5, 0},
		{"Conflict", func(s *recalltest.Server) { s.FailNext(1, 409) }, 2, 0},
		{"InsufficientStorage", func(s *recalltest.Server) { s.FailNext(1, 507) }, 2, 30 * time.Second},
		{"TruncatedBody", func(s *recalltest.Server) { s.TruncateNext(2) }, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := recalltest.New(t)
			cal := srv.PutCalendar(recalltest.Calendar{PlatformEmail: "a@example.com"})
			tt.inject(srv)
			c, clk := newClient(t, srv)
			got, err := c.GetCalendar(t.Context(), cal.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != cal.ID || got.PlatformEmail != "a@example.com" {
				t.Errorf("GetCalendar = %+v", got)
			}
			if n := srv.Requests(recalltest.EndpointCalendarRetrieve); n != tt.wantReqs {
				t.Errorf("%d requests, want %d", n, tt.wantReqs)
			}
			if clk.Slept() < tt.wantSlept {
				t.Errorf("slept %s, want at least %s", clk.Slept(), tt.wantSlept)
			}
		})
	}
}

func TestPermanentErrors(t *testing.T) {
	tests := []struct {
		name     string
		key      string
		inject   func(*recalltest.Server)
		id       string
		status   int
		notFound bool
	}{
		{"Unauthorized", "wrong-key", func(*recalltest.Server) {}, "", 401, false},
		{"Forbidden", "", func(s *recalltest.Server) { s.FailNext(1, 403) }, "", 403, false},
		{"BadRequest", "", func(s *recalltest.Server) { s.FailNext(1, 400) }, "", 400, false},
		{"NotFound", "", func(*recalltest.Server) {}, "00000000-0000-4000-8000-000000000000", 404, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := recalltest.New(t)
			cal := srv.PutCalendar(recalltest.Calendar{})
			tt.inject(srv)
			key := srv.APIKey()
			if tt.key != "" {
				key = tt.key
			}
			clk := &fakeClock{now: time.Now()}
			c := recall.NewClient(srv.URL, key, recall.WithHTTPClient(srv.Client()), recall.WithClock(clk.Now, clk.Sleep))
			id := cal.ID
			if tt.id != "" {
				id = tt.id
			}
			_, err := c.GetCalendar(t.Context(), id)
			var ae *recall.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("GetCalendar = %v, want APIError %d", err, tt.status)
			}
			if !recall.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false", err)
			}
			if errors.Is(err, recall.ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v", err, !tt.notFound)
			}
			if n := srv.Requests(""); n != 1 {
				t.Errorf("%d requests, want 1 (no retry)", n)
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error %q leaks the API key", err)
			}
		})
	}
}

func TestGiveUpAfterMaxElapsed(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{})
	srv.FailNext(1000, 503)
	c, clk := newClient(t, srv, recall.WithBackoff(time.Second, 10*time.Second, time.Minute))
	_, err := c.GetCalendar(t.Context(), cal.ID)
	if err == nil || recall.IsPermanent(err) {
		t.Fatalf("GetCalendar = %v, want a temporary error", err)
	}
	if clk.Slept() > time.Minute {
		t.Errorf("slept %s past the one-minute limit", clk.Slept())
	}
}

func TestContextCancelled(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{})
	srv.SlowNext(1, 10*time.Second)
	c := recall.NewClient(srv.URL, srv.APIKey(), recall.WithHTTPClient(srv.Client()))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := c.GetCalendar(ctx, cal.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetCalendar = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}

	srv.FailNext(1, 503) // Cancelled while waiting to retry.
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	c = recall.NewClient(srv.URL, srv.APIKey(), recall.WithHTTPClient(srv.Client()), recall.WithBackoff(time.Hour, time.Hour, 0))
	if _, err := c.GetCalendar(ctx, cal.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetCalendar = %v, want DeadlineExceeded", err)
	}
}

func TestRateLimit(t *testing.T) {
	srv := recalltest.New(t, recalltest.WithPageSize(1))
	cal := srv.PutCalendar(recalltest.Calendar{})
	addEvents(srv, cal.ID, 5)
	var mu sync.Mutex
	observed := map[string]int{}
	c, clk := newClient(t, srv,
		recall.WithRateLimit(recall.EndpointEventList, 60, 1),
		recall.WithObserver(func(endpoint string, status int, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			observed[fmt.Sprintf("%s %d", endpoint, status)]++
		}))
	if err := c.ListEvents(t.Context(), cal.ID, time.Time{}, func([]recall.Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// Five pages at one request a second with a burst of one: four waits.
	if got := clk.Slept(); got < 4*time.Second || got > 5*time.Second {
		t.Errorf("slept %s for 5 pages at 60/min, want about 4s", got)
	}
	if observed[recall.EndpointEventList+" 200"] != 5 {
		t.Errorf("observer saw %v", observed)
	}
}

func TestGetEvent(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{})
	e := srv.PutEvent(recalltest.Google("g1").Summary("Hello").
		Timed(time.Date(2026, 1, 21, 9, 0, 0, 0, time.UTC), time.Date(2026, 1, 21, 10, 0, 0, 0, time.UTC), "Europe/Paris").
		Event(cal.ID))
	c, _ := newClient(t, srv)
	got, err := c.GetEvent(t.Context(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := recall.NormalizeEvent(got)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetTitle() != "Hello" || ev.GetTimeZone() != "Europe/Paris" || ev.GetProviderEventId() != e.ID {
		t.Errorf("normalized = %v", ev)
	}
	if _, err := c.GetEvent(t.Context(), "missing"); !errors.Is(err, recall.ErrNotFound) {
		t.Errorf("GetEvent(missing) = %v, want ErrNotFound", err)
	}
}

func TestCalendarSecretsNeverKept(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{
		Platform: "microsoft_outlook", PlatformEmail: "a@example.com",
		OAuthClientID: "client-id-SECRET", OAuthClientSecret: "client-secret-SECRET", OAuthRefreshToken: "refresh-SECRET",
		Metadata: map[string]any{"tenant": "acme"},
	})
	srv.SetCalendarStatus(cal.ID, "disconnected", map[string]any{"error": "invalid_grant"})
	c, _ := newClient(t, srv)
	got, err := c.GetCalendar(t.Context(), cal.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v", got); strings.Contains(s, "SECRET") {
		t.Fatalf("decoded calendar holds a secret: %s", s)
	}
	norm := recall.NormalizeCalendar(got)
	b, _ := protojson.Marshal(norm)
	if strings.Contains(string(b), "SECRET") {
		t.Fatalf("normalized calendar holds a secret: %s", b)
	}
	if n := len(norm.GetStatusChanges()); n != 2 || norm.GetStatusChanges()[1].GetDetails().GetFields()["error"].GetStringValue() != "invalid_grant" {
		t.Errorf("status changes = %v", norm.GetStatusChanges())
	}
	if norm.GetMetadata().GetFields()["tenant"].GetStringValue() != "acme" {
		t.Errorf("metadata = %v", norm.GetMetadata())
	}
}

func TestIsPermanent(t *testing.T) {
	if recall.IsPermanent(nil) || recall.IsPermanent(context.Canceled) || recall.IsPermanent(&recall.APIError{StatusCode: http.StatusTooManyRequests}) {
		t.Error("temporary error reported permanent")
	}
	if !recall.IsPermanent(fmt.Errorf("wrapped: %w", &recall.APIError{StatusCode: 401})) {
		t.Error("401 not permanent")
	}
}
