package metrics_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// scrapeLine returns the sample line of name in m's exposition, or "".
func scrapeLine(t *testing.T, m *metrics.Metrics, name string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	return ""
}

// TestWatchLag: calsync_watch_lag_changes is the change log's head, read
// at the scrape, minus the newest change the watchers hold; it goes to 0
// once they caught up.
func TestWatchLag(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var held atomic.Uint64 // what the watchers hold
	m := metrics.New()
	m.WatchLag(db, func() store.Cursor { return store.Cursor(held.Load()) }, nil)
	if got := scrapeLine(t, m, "calsync_watch_lag_changes"); got != "calsync_watch_lag_changes 0" {
		t.Fatalf("empty log: %q, want a lag of 0", got)
	}
	var last store.Cursor
	for range 3 {
		err := db.Update(ctx, func(tx store.Tx) error {
			var err error
			last, err = tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED,
				Event: &calsyncv1.CalendarEvent{Id: "evt_a", CalendarId: "cal_a", Provider: "postpress"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	held.Store(1)
	if got := scrapeLine(t, m, "calsync_watch_lag_changes"); got != "calsync_watch_lag_changes 2" {
		t.Fatalf("watchers at 1 of 3: %q, want a lag of 2", got)
	}
	held.Store(uint64(last))
	if got := scrapeLine(t, m, "calsync_watch_lag_changes"); got != "calsync_watch_lag_changes 0" {
		t.Fatalf("watchers caught up: %q, want a lag of 0", got)
	}
}
