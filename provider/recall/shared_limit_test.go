package recall_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// recordingLimiter passes TakeToken on to a store and remembers the
// bucket names asked for.
type recordingLimiter struct {
	store.RateLimiter
	mu    sync.Mutex
	names []string
}

func (l *recordingLimiter) TakeToken(ctx context.Context, name string, interval time.Duration, burst int) (time.Duration, error) {
	l.mu.Lock()
	l.names = append(l.names, name)
	l.mu.Unlock()
	return l.RateLimiter.TakeToken(ctx, name, interval, burst)
}

// Limits of these tests: 600 a minute with a burst of 2 is a token every
// 60s/598, about 100 ms.
const (
	testPerMinute = 600
	testBurst     = 2
	testInterval  = time.Minute / (testPerMinute - testBurst)
)

// requestTimes runs requests GetCalendar calls through each client at
// once (each client's calls one after another) and returns when each
// request was answered, sorted.
func requestTimes(t *testing.T, clients []*recall.Client, times *[]time.Time, mu *sync.Mutex, calendarID string, requests int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for range requests {
				if _, err := c.GetCalendar(t.Context(), calendarID); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	slices.SortFunc(*times, func(a, b time.Time) int { return a.Compare(b) })
	mu.Unlock()
}

// checkWithinLimit requires every span between two answers to hold no
// more requests than the limit lets through in it: the burst, plus one
// per interval, plus one for the time between a request's token and its
// answer.
func checkWithinLimit(t *testing.T, times []time.Time) {
	t.Helper()
	for i := range times {
		for j := i + 1; j < len(times); j++ {
			span := times[j].Sub(times[i])
			if n, most := j-i+1, testBurst+1+int(span/testInterval); n > most {
				t.Fatalf("%d requests within %v; the limit allows %d", n, span, most)
			}
		}
	}
}

// TestSharedRateLimit: two clients with one API key, as on two replicas,
// wait on one bucket in the database: together they stay within the
// endpoint's limit, and the bucket's name does not reveal the key.
func TestSharedRateLimit(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{})
	url := pgtest.NewDatabase(t)
	var mu sync.Mutex
	var times []time.Time
	var limiters []*recordingLimiter
	var clients []*recall.Client
	for range 2 {
		db, err := postgres.Open(t.Context(), url, postgres.Options{TempDir: t.TempDir(), MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		l := &recordingLimiter{RateLimiter: db}
		limiters = append(limiters, l)
		clients = append(clients, recall.NewClient(srv.URL, srv.APIKey(), recall.WithHTTPClient(srv.Client()),
			recall.WithRateLimit(recall.EndpointCalendarRetrieve, testPerMinute, testBurst),
			recall.WithSharedRateLimiter(l),
			recall.WithObserver(func(string, int, time.Duration) {
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
			})))
	}
	const perClient = 7
	began := time.Now()
	requestTimes(t, clients, &times, &mu, cal.ID, perClient)
	elapsed := time.Since(began)

	if n := srv.Requests(recalltest.EndpointCalendarRetrieve); n != 2*perClient {
		t.Fatalf("the fake received %d requests, want %d", n, 2*perClient)
	}
	// With a limiter each, the two would be done in about half the time.
	if least := time.Duration(2*perClient-testBurst) * testInterval; elapsed < least*95/100 {
		t.Errorf("%d requests took %v; the shared limit needs at least %v", 2*perClient, elapsed, least)
	}
	checkWithinLimit(t, times)
	t.Logf("%d requests from two clients in %v (limit: %d a minute, burst %d)", 2*perClient, elapsed, testPerMinute, testBurst)
	for _, l := range limiters {
		for _, name := range l.names {
			if strings.Contains(name, srv.APIKey()) || !strings.Contains(name, recall.EndpointCalendarRetrieve) || name != limiters[0].names[0] {
				t.Fatalf("bucket %q: want one bucket per endpoint and key, named without the key", name)
			}
		}
	}
}

// TestSharedRateLimitFallsBack: when the shared bucket cannot be reached
// (its database is gone), requests still go out, paced by the client's
// own limiter.
func TestSharedRateLimitFallsBack(t *testing.T) {
	srv := recalltest.New(t)
	cal := srv.PutCalendar(recalltest.Calendar{})
	db, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{TempDir: t.TempDir(), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	db.Close() // every TakeToken now fails
	var mu sync.Mutex
	var times []time.Time
	c := recall.NewClient(srv.URL, srv.APIKey(), recall.WithHTTPClient(srv.Client()),
		recall.WithRateLimit(recall.EndpointCalendarRetrieve, testPerMinute, testBurst),
		recall.WithSharedRateLimiter(db),
		recall.WithObserver(func(string, int, time.Duration) {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
		}))
	const requests = 6
	began := time.Now()
	requestTimes(t, []*recall.Client{c}, &times, &mu, cal.ID, requests)
	elapsed := time.Since(began)
	if n := srv.Requests(recalltest.EndpointCalendarRetrieve); n != requests {
		t.Fatalf("the fake received %d requests, want %d", n, requests)
	}
	if least := time.Duration(requests-testBurst) * testInterval; elapsed < least*95/100 {
		t.Errorf("%d requests took %v; the local limit needs at least %v", requests, elapsed, least)
	}
	checkWithinLimit(t, times)
}
