package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/watch"
)

// feedWait bounds every wait for a hook in these tests.
const feedWait = 15 * time.Second

// feedCalendar is the calendar of the events these tests commit.
var feedCalendar = model.CalendarID("postpress", "acct", "feed")

// hookLog records what one store's commit hooks receive, and when.
type hookLog struct {
	mu      sync.Mutex
	recs    []store.ChangeRecord
	at      map[store.Cursor]time.Time
	changed chan struct{}
}

func watchHooks(s store.Store) *hookLog {
	l := &hookLog{at: map[store.Cursor]time.Time{}, changed: make(chan struct{})}
	s.OnCommit(func(recs []store.ChangeRecord) {
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, r := range recs {
			l.recs = append(l.recs, r)
			l.at[r.Cursor] = now
		}
		close(l.changed)
		l.changed = make(chan struct{})
	})
	return l
}

// waitFor waits until the hooks have received cursor c, and returns when.
func (l *hookLog) waitFor(t *testing.T, c store.Cursor) time.Time {
	t.Helper()
	deadline := time.NewTimer(feedWait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		at, ok := l.at[c]
		changed := l.changed
		l.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("cursor %d did not reach the hooks within %v", c, feedWait)
		}
	}
}

func (l *hookLog) all() []store.ChangeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]store.ChangeRecord(nil), l.recs...)
}

// checkSameAsLog fails unless the hooks received exactly the change log
// after the cursor from: every change once, in order, no gap.
func (l *hookLog) checkSameAsLog(t *testing.T, s store.Store, from store.Cursor) {
	t.Helper()
	var want []store.Cursor
	for after := from; ; {
		page, err := s.ReadChanges(context.Background(), after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			want = append(want, r.Cursor)
		}
		after = page[len(page)-1].Cursor
	}
	var got []store.Cursor
	for _, r := range l.all() {
		got = append(got, r.Cursor)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hooks received cursors %v, want the log's %v", got, want)
	}
}

func openPG(t *testing.T, url string, opts postgres.Options) *postgres.DB {
	t.Helper()
	opts.MaxConns = 4
	db, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// commitOne commits one change of a new event through s and returns its
// cursor.
func commitOne(t *testing.T, s store.Store, id string) store.Cursor {
	t.Helper()
	ctx := context.Background()
	var cur store.Cursor
	err := s.Update(ctx, func(tx store.Tx) error {
		e := &calsyncv1.CalendarEvent{Id: id, CalendarId: feedCalendar, Provider: "postpress"}
		if err := tx.PutEvent(ctx, e); err != nil {
			return err
		}
		var err error
		cur, err = tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e})
		return err
	})
	if err != nil {
		t.Fatalf("commit %s: %v", id, err)
	}
	return cur
}

// listeners counts the sessions of url's database that listen for the
// change feed's notifications.
func listeners(t *testing.T, url string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND query ILIKE 'LISTEN %'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitListeners waits until n sessions listen on url's database.
func waitListeners(t *testing.T, url string, n int) {
	t.Helper()
	deadline := time.Now().Add(feedWait)
	for listeners(t, url) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions listen, want %d", listeners(t, url), n)
		}
	}
}

// TestPostgresFeedNotify: with polling set to an hour, a commit through
// instance A reaches B's hooks through LISTEN/NOTIFY, in milliseconds; A's
// own hooks get it too, and both see the same log.
func TestPostgresFeedNotify(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := openPG(t, url, postgres.Options{PollInterval: time.Hour})
	b := openPG(t, url, postgres.Options{PollInterval: time.Hour})
	aHooks, bHooks := watchHooks(a), watchHooks(b)
	// Both listen before the commits, so that only a notification can
	// bring them to B within the test.
	waitListeners(t, url, 2)
	const n = 50
	lat := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		c := commitOne(t, a, fmt.Sprint("evt_", i))
		lat = append(lat, bHooks.waitFor(t, c).Sub(start))
		aHooks.waitFor(t, c)
	}
	aHooks.checkSameAsLog(t, a, 0)
	bHooks.checkSameAsLog(t, b, 0)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("commit through A to B's hook, %d sequential commits: p50 %v, p90 %v, max %v",
		n, lat[n/2], lat[n*9/10], lat[n-1])
}

// TestPostgresFeedPollOnly: with LISTEN/NOTIFY off, no session listens,
// and commits through A still reach B's hooks through polling.
func TestPostgresFeedPollOnly(t *testing.T) {
	url := pgtest.NewDatabase(t)
	opts := postgres.Options{PollOnly: true, PollInterval: 20 * time.Millisecond}
	a := openPG(t, url, opts)
	b := openPG(t, url, opts)
	bHooks := watchHooks(b)
	var last store.Cursor
	for i := range 10 {
		last = commitOne(t, a, fmt.Sprint("evt_", i))
	}
	bHooks.waitFor(t, last)
	bHooks.checkSameAsLog(t, b, 0)
	if n := listeners(t, url); n != 0 {
		t.Fatalf("%d sessions listen with PollOnly set, want none", n)
	}
}

// TestPostgresFeedLateCommit: a transaction that took its cursor and waits
// before committing holds the hooks of a third instance back, and once it
// commits they get it, then the later commit, in order.
func TestPostgresFeedLateCommit(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	opts := postgres.Options{PollInterval: 10 * time.Millisecond}
	slow, fast, reader := openPG(t, url, opts), openPG(t, url, opts), openPG(t, url, opts)
	hooks := watchHooks(reader)
	first := commitOne(t, fast, "evt_first")
	hooks.waitFor(t, first)

	appended, release := make(chan store.Cursor, 1), make(chan struct{})
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- slow.Update(ctx, func(tx store.Tx) error {
			cur, err := tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED,
				Event: &calsyncv1.CalendarEvent{Id: "evt_slow", CalendarId: feedCalendar, Provider: "postpress"}})
			if err != nil {
				return err
			}
			appended <- cur
			<-release
			return nil
		})
	}()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	slowCursor := <-appended
	fastDone := make(chan store.Cursor, 1)
	go func() { fastDone <- commitOne(t, fast, "evt_fast") }()
	// The reader's feed polls every 10 ms; watch it for a while: it must
	// not report anything at or after the slow transaction's cursor.
	window := time.NewTimer(300 * time.Millisecond)
	for watching := true; watching; {
		hooks.mu.Lock()
		changed := hooks.changed
		hooks.mu.Unlock()
		for _, r := range hooks.all() {
			if r.Cursor >= slowCursor {
				t.Fatalf("the hooks saw cursor %d before the transaction holding %d committed", r.Cursor, slowCursor)
			}
		}
		select {
		case <-changed:
		case <-window.C:
			watching = false
		}
	}
	close(release)
	released = true
	if err := <-slowDone; err != nil {
		t.Fatalf("the slow commit: %v", err)
	}
	fastCursor := <-fastDone
	if fastCursor != slowCursor+1 {
		t.Fatalf("the fast commit got cursor %d, want %d (after the slow one)", fastCursor, slowCursor+1)
	}
	hooks.waitFor(t, fastCursor)
	hooks.checkSameAsLog(t, reader, 0)
}

// TestPostgresFeedRestart: PostgreSQL restarts between commits. The
// listening instance reconnects by itself and its hooks miss nothing: with
// polling set to an hour, only its reconnection (which reads what it
// missed) and the notifications can bring the commits.
func TestPostgresFeedRestart(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := openPG(t, url, postgres.Options{PollInterval: time.Hour})
	b := openPG(t, url, postgres.Options{PollInterval: time.Hour})
	bHooks := watchHooks(b)
	waitListeners(t, url, 2)
	bHooks.waitFor(t, commitOne(t, a, "evt_before"))

	for round := range 2 {
		if err := pgtest.Shared(t).Restart(); err != nil {
			t.Fatalf("restart: %v", err)
		}
		// A commit meeting a connection the restart cut fails; the pool
		// replaces it, so a retry succeeds within moments.
		var last store.Cursor
		for i := range 5 {
			deadline := time.Now().Add(feedWait)
			for {
				cur, err := tryCommit(a, fmt.Sprintf("evt_%d_%d", round, i))
				if err == nil {
					last = cur
					break
				}
				if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
					t.Fatalf("commit after the restart: %v", err)
				}
			}
		}
		bHooks.waitFor(t, last)
	}
	bHooks.checkSameAsLog(t, b, 0)
}

// tryCommit commits one change of a new event through s.
func tryCommit(s store.Store, id string) (store.Cursor, error) {
	ctx := context.Background()
	var cur store.Cursor
	err := s.Update(ctx, func(tx store.Tx) error {
		var err error
		cur, err = tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED,
			Event: &calsyncv1.CalendarEvent{Id: id, CalendarId: feedCalendar, Provider: "postpress"}})
		return err
	})
	return cur, err
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPostgresFeedBehindCompaction: an instance whose feed fell behind
// changes that were compacted before it read them cannot report them. It
// says so in its log, its hooks get what is left, and its watch streams
// behind the gap end with OUT_OF_RANGE instead of skipping it, a stream
// filtered to the calendar of the changes after the gap included.
func TestPostgresFeedBehindCompaction(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a := openPG(t, url, postgres.Options{PollOnly: true, PollInterval: time.Hour})
	logs := &syncBuffer{}
	// B reads the log only after its own commits.
	b := openPG(t, url, postgres.Options{PollOnly: true, PollInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	bHooks := watchHooks(b)
	hub, err := watch.New(ctx, b, watch.Config{})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		err     error
		changes int
	}
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	requests := []*calsyncv1.WatchEventsRequest{{}, {CalendarIds: []string{feedCalendar}}}
	ended := make(chan outcome, len(requests))
	for _, req := range requests {
		started := make(chan struct{})
		go func() {
			var o outcome
			first := true
			defer func() {
				if first {
					close(started) // Refused: the outcome says why.
				}
			}()
			o.err = hub.Watch(watchCtx, req, func(f watch.Frame) error {
				if first {
					first = false
					close(started)
					return nil
				}
				var resp calsyncv1.WatchEventsResponse
				if err := proto.Unmarshal(f, &resp); err != nil {
					return err
				}
				if resp.GetChange() != nil {
					o.changes++
				}
				return nil
			})
			ended <- o
		}()
		<-started // The stream is live at cursor 0.
	}

	for i := range 5 {
		commitOne(t, a, fmt.Sprint("evt_a", i))
	}
	removed, err := a.CompactChanges(ctx, time.Now().Add(time.Hour))
	if err != nil || removed != 4 {
		t.Fatalf("CompactChanges = %d, %v; want 4 removed (never the newest)", removed, err)
	}
	own := commitOne(t, b, "evt_b")
	bHooks.waitFor(t, own)
	var got []store.Cursor
	for _, r := range bHooks.all() {
		got = append(got, r.Cursor)
	}
	if fmt.Sprint(got) != fmt.Sprint([]store.Cursor{5, 6}) {
		t.Fatalf("B's hooks received %v, want what compaction left: [5 6]", got)
	}
	if !strings.Contains(logs.String(), "compaction") {
		t.Errorf("B's log does not report the changes it could not deliver:\n%s", logs)
	}
	for range requests {
		select {
		case o := <-ended:
			var we *watch.Error
			if !errors.As(o.err, &we) || we.Code != codes.OutOfRange || o.changes != 0 {
				t.Errorf("a stream behind the gap ended with %v after %d changes, want OUT_OF_RANGE after none", o.err, o.changes)
			}
		case <-time.After(feedWait):
			t.Fatal("a stream behind the gap is still open: it skipped the compacted changes")
		}
	}
	if h := hub.Head(); h != own {
		t.Errorf("hub head %d, want %d", h, own)
	}
}
