package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/jackc/pgx/v5"
)

// takeoverBound is how long the work a dead or stalled replica held may
// take to complete elsewhere with the default claim TTL (10 s, polled
// every second).
const takeoverBound = 20 * time.Second

// Recall's documented limit on event lists, per API key, which calsync's
// client applies by default: 60 a minute, in bursts of at most 5.
const (
	eventListInterval = time.Second
	eventListBurst    = 5
)

// pollUntil polls f until it holds, failing the test after timeout, and
// returns how long it took.
func pollUntil(t *testing.T, what string, timeout time.Duration, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// putRecallEvents puts n events on the fake's calendar calID, titled
// "<prefix> <i>".
func putRecallEvents(fake *recalltest.Server, calID, prefix string, n int) []recalltest.Event {
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour).UTC()
	var out []recalltest.Event
	for i := range n {
		out = append(out, fake.PutEvent(recalltest.Google(fmt.Sprintf("%s-%d", calID, i)).Summary(fmt.Sprintf("%s %d", prefix, i)).
			Timed(start.Add(time.Duration(i)*time.Hour), start.Add(time.Duration(i)*time.Hour+30*time.Minute), "UTC").Event(calID)))
	}
	return out
}

// sendHint sends a signed calendar.sync_events hint (a new Svix message)
// for the Recall calendar calID, to replica first or the next live one.
func (c *testCluster) sendHint(t *testing.T, client *http.Client, first int, calID string) ingestAnswer {
	t.Helper()
	body := syncEventsBody(calID)
	a, _, err := c.sendAnywhere(client, first, "recall", body, recallSigned(t, "svix", recallSecret, time.Now(), body), 30*time.Second)
	if err != nil {
		t.Fatalf("Recall hint for %s: %v", calID, err)
	}
	return a
}

// holdFetch holds back every replica's event list of calID, sends a hint
// for it to replica first and returns the replica whose fetch is held
// (the one that claimed the hint) and the hint's answer; the other
// replicas' taps stop holding.
func (c *testCluster) holdFetch(t *testing.T, client *http.Client, first int, calID string) (int, ingestAnswer) {
	t.Helper()
	for _, tp := range c.taps {
		tp.hold(calID)
	}
	a := c.sendHint(t, client, first, calID)
	holder := -1
	pollUntil(t, "a replica to fetch calendar "+calID, 20*time.Second, func() bool {
		for i, tp := range c.taps {
			if tp.heldNow() > 0 {
				holder = i
				return true
			}
		}
		return false
	})
	for i, tp := range c.taps {
		if i != holder {
			tp.releaseHeld()
		}
	}
	return holder, a
}

// postpressLoad sends postpress webhooks without pause from several
// senders, round-robin over the replicas; each sender owns a few events
// and sends new versions of them, each retried on the next replica until
// one answers 200.
type postpressLoad struct {
	c      *testCluster
	client *http.Client
	next   atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	acked    int            // webhooks answered 200 (each a distinct body)
	versions map[string]int // event id -> last version answered 200
	calendar map[string]string
	err      error
}

// postpressCalendars are the calendars the load spreads its events over.
var postpressCalendars = []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}

func startPostpressLoad(c *testCluster, senders int) *postpressLoad {
	l := &postpressLoad{c: c, client: &http.Client{Timeout: 10 * time.Second}, stop: make(chan struct{}),
		versions: map[string]int{}, calendar: map[string]string{}}
	auth := http.Header{"Postpress-Auth": {postpressSecret}}
	for s := range senders {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := fmt.Sprintf("s%d-e%d", s, i%5)
				cal := postpressCalendars[(s+i%5)%len(postpressCalendars)]
				version := i/5 + 1
				_, _, err := c.sendAnywhere(l.client, int(l.next.Add(1)), "postpress", ppWebhook(cal, id, version), auth, 30*time.Second)
				l.mu.Lock()
				if err != nil {
					l.err = fmt.Errorf("sender %d, %s v%d: %w", s, id, version, err)
					l.mu.Unlock()
					return
				}
				l.acked++
				l.versions[id], l.calendar[id] = version, cal
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *postpressLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// finish stops the senders once each has its last webhook answered.
func (l *postpressLoad) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.err != nil {
		t.Fatal(l.err)
	}
}

// TestClusterKillUnderLoad runs three replicas on one PostgreSQL with
// postpress webhooks spread over them, Recall hints, and two watchers per
// replica; the replica fetching a Recall calendar is killed with SIGKILL
// under load and restarted. Every webhook answered 200 is stored and
// processed once, the killed replica's work (and its leadership, if it
// led) moves to the others within 20 s, every watcher sees the one change log in the same order with no
// gap and no duplicate (resuming on another replica when its own dies),
// a watcher that starts from a snapshot while a replica is down ends with
// the store's state, and the store holds what the providers last said.
func TestClusterKillUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := c.pg(ctx)
	client := &http.Client{Timeout: 10 * time.Second}

	victimCal := c.fake.PutCalendar(recalltest.Calendar{PlatformEmail: "victim@example.com"})
	putRecallEvents(c.fake, victimCal.ID, "victim", 3)
	var recallCals []recalltest.Calendar
	for i := range 3 {
		cal := c.fake.PutCalendar(recalltest.Calendar{PlatformEmail: fmt.Sprintf("r%d@example.com", i)})
		putRecallEvents(c.fake, cal.ID, "recall", 2)
		recallCals = append(recallCals, cal)
	}
	// updateRecall changes the first event of every Recall calendar and
	// hints each change to another replica.
	round := 0
	updateRecall := func() {
		round++
		for i, cal := range recallCals {
			ev := c.fake.Events(cal.ID)[0]
			c.fake.UpdateEvent(ev.ID, func(e *recalltest.Event) { e.Raw["summary"] = fmt.Sprintf("recall round %d", round) })
			c.sendHint(t, client, round+i, cal.ID)
		}
	}

	start := startCursor(t, ctx, c.replica(0))
	watchers := startWatchers(ctx, c, start, 2)
	defer watchers.stop()

	load := startPostpressLoad(c, 4)
	pollUntil(t, "webhooks answered before the kill", 30*time.Second, func() bool { return load.ackedCount() >= 60 })
	updateRecall()

	pollUntil(t, "one leader", 20*time.Second, func() bool { return len(c.leaders(t)) == 1 })
	leader := c.leaders(t)[0]
	victim, victimHint := c.holdFetch(t, client, 0, victimCal.ID)
	atKill := load.ackedCount()
	killedAt := time.Now()
	c.kill(victim)
	c.taps[victim].releaseHeld()
	// The killed replica's claimed work, and its leadership if it led,
	// move to the others.
	var takeover, newLeader time.Duration
	pollUntil(t, "the killed replica's work and role to move", 40*time.Second, func() bool {
		if takeover == 0 && deliveryState(t, pg, victimHint.DeliveryID) == calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
			takeover = time.Since(killedAt)
		}
		if newLeader == 0 && len(c.leaders(t)) == 1 {
			newLeader = time.Since(killedAt)
		}
		return takeover != 0 && newLeader != 0
	})
	t.Logf("kill -9 of replica %d: its claimed work completed elsewhere %v later", victim, takeover.Round(time.Millisecond))
	if takeover > takeoverBound {
		t.Errorf("the killed replica's work took %v to complete elsewhere, want at most %v", takeover, takeoverBound)
	}
	if leader == victim {
		t.Logf("the killed replica led: replica %d leads %v later", c.leaders(t)[0], newLeader.Round(time.Millisecond))
		if newLeader > takeoverBound {
			t.Errorf("the cluster was without a leader for %v after its leader was killed, want at most %v", newLeader, takeoverBound)
		}
	}
	// A client starting from a snapshot now, on a live replica, while
	// webhooks come in.
	view := &snapshotView{titles: map[string]string{}}
	viewReplica := (victim + 1) % c.size()
	watchers.wg.Go(func() { view.run(watchers.ctx, c.replica(viewReplica)) })
	if got := load.ackedCount(); got <= atKill {
		t.Errorf("no webhook answered while replica %d was down (%d before, %d after)", victim, atKill, got)
	}
	updateRecall()

	c.start(victim)
	atRestart := load.ackedCount()
	pollUntil(t, "webhooks answered after the restart", 30*time.Second, func() bool { return load.ackedCount() >= atRestart+60 })
	updateRecall()
	load.finish(t)
	// A last hint per calendar, after its last change: the store must end
	// where Recall is.
	for i, cal := range append(recallCals, victimCal) {
		c.sendHint(t, client, i, cal.ID)
	}

	if got := c.leaders(t); len(got) != 1 {
		t.Errorf("replicas %v lead the cluster, want one", got)
	}
	// The restarted replica reads the change log the watchers are held to.
	logCursors, stored := checkConverged(t, ctx, c, pg, load, start, watchers, victim, append(recallCals, victimCal))
	pollUntil(t, "the snapshot watcher to catch up", 20*time.Second, func() bool {
		_, complete, live, err := view.state()
		last := logCursors[len(logCursors)-1]
		return err != nil || complete == last || (len(live) > 0 && live[len(live)-1] == last)
	})
	resumed := watchers.stop()
	if resumed == 0 {
		t.Errorf("no watcher resumed after replica %d was killed", victim)
	}

	// The snapshot watcher: its snapshot and the live changes after it
	// add up to the store, and its live part is the log's after the
	// snapshot's bookmark, with no gap and no overlap.
	titles, complete, live, err := view.state()
	if err != nil {
		t.Errorf("the snapshot watcher on replica %d failed: %v", viewReplica, err)
	}
	if i := slices.Index(logCursors, complete); !slices.Equal(live, logCursors[i+1:]) {
		t.Errorf("after its snapshot (bookmark at change %d of %d), the snapshot watcher saw %d live changes, not the log's %d in order",
			i+1, len(logCursors), len(live), len(logCursors)-i-1)
	}
	if len(titles) != len(stored) {
		t.Errorf("the snapshot watcher holds %d events, the store %d", len(titles), len(stored))
	}
	for key, e := range stored {
		if titles[key] != e.GetTitle() {
			t.Errorf("event %s: the snapshot watcher holds %q, the store %q", key, titles[key], e.GetTitle())
		}
	}
	t.Logf("%d postpress webhooks answered 200, %d changes, %d watcher resumptions, %d Recall requests",
		load.acked, len(logCursors), resumed, len(c.log.requests(func(recallRequest) bool { return true })))
}

// TestClusterPostgresRestart restarts PostgreSQL (a fast shutdown, as a
// failover does) under load on three replicas with watchers on each: the
// replicas serve again by themselves, every webhook answered 200 is
// stored and processed once, and every watcher (whose stream stays open
// or ends with UNAVAILABLE and resumes) sees the one change log.
func TestClusterPostgresRestart(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	// The log is read from here on, and checkConverged counts every change
	// in it: the hints' changes must come after this cursor, so it is
	// taken before they are sent.
	start := startCursor(t, ctx, c.replica(0))
	var recallCals []recalltest.Calendar
	for i := range 2 {
		cal := c.fake.PutCalendar(recalltest.Calendar{PlatformEmail: fmt.Sprintf("restart%d@example.com", i)})
		putRecallEvents(c.fake, cal.ID, "before the restart", 2)
		recallCals = append(recallCals, cal)
		c.sendHint(t, client, i, cal.ID)
	}
	watchers := startWatchers(ctx, c, start, 1)
	defer watchers.stop()
	load := startPostpressLoad(c, 4)
	pollUntil(t, "webhooks answered before the restart", 30*time.Second, func() bool { return load.ackedCount() >= 60 })

	if err := pgtest.Shared(t).Restart(); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	atRestart := load.ackedCount()
	pollUntil(t, "webhooks answered after the restart", 30*time.Second, func() bool { return load.ackedCount() >= atRestart+60 })
	for i, cal := range recallCals {
		c.fake.UpdateEvent(c.fake.Events(cal.ID)[0].ID, func(e *recalltest.Event) { e.Raw["summary"] = "after the restart" })
		c.sendHint(t, client, i+1, cal.ID)
	}
	load.finish(t)
	for i := range c.size() {
		pollUntil(t, fmt.Sprintf("replica %d to be healthy", i), 20*time.Second, func() bool {
			code, _ := httpDo(t, http.MethodGet, c.replica(i).url("/healthz"), nil, nil)
			return code == http.StatusOK
		})
	}
	// The test's own connection opens after the restart.
	logCursors, _ := checkConverged(t, ctx, c, c.pg(ctx), load, start, watchers, 1, recallCals)
	resumed := watchers.stop()
	t.Logf("%d postpress webhooks answered 200, %d changes, %d watcher resumptions", load.acked, len(logCursors), resumed)
}

// watcherSet is a few clusterWatchers on every replica, all from one
// cursor.
type watcherSet struct {
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	watchers []*clusterWatcher
}

// startWatchers starts perReplica watchers at home on each replica,
// following the log after start.
func startWatchers(ctx context.Context, c *testCluster, start string, perReplica int) *watcherSet {
	ws := &watcherSet{}
	ws.ctx, ws.cancel = context.WithCancel(ctx)
	for i := range perReplica * c.size() {
		w := &clusterWatcher{home: i % c.size()}
		ws.watchers = append(ws.watchers, w)
		ws.wg.Go(func() { w.run(ws.ctx, c, start) })
	}
	return ws
}

// stop ends the watchers and returns how many times they resumed in all.
func (ws *watcherSet) stop() int {
	ws.cancel()
	ws.wg.Wait()
	resumed := 0
	for _, w := range ws.watchers {
		w.mu.Lock()
		resumed += w.resumes
		w.mu.Unlock()
	}
	return resumed
}

// checkConverged waits until every delivery is processed, then requires
// the cluster to be where the webhooks sent say: one delivery per
// postpress webhook answered 200, one change per version, the change log
// (read from replica readFrom after start) seen by every watcher in the
// same order with no gap and no duplicate, and the store holding the last
// version of every postpress event and what Recall holds for
// recallCals. It returns the log's cursors and the stored events by
// calendar and provider event id.
func checkConverged(t *testing.T, ctx context.Context, c *testCluster, pg *pgx.Conn, load *postpressLoad, start string,
	ws *watcherSet, readFrom int, recallCals []recalltest.Calendar) ([]string, map[string]*calsyncv1.CalendarEvent) {
	t.Helper()
	pollUntil(t, "every delivery to be processed", 30*time.Second, func() bool {
		var open int
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE state <> $1`, int32(calsyncv1.DeliveryState_DELIVERY_STATE_DONE)).Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0
	})

	// The inbox: one delivery per webhook answered 200, all processed.
	var postpressDeliveries, changes int
	if err := pg.QueryRow(ctx, `SELECT (SELECT count(*) FROM deliveries WHERE provider = 'postpress'), (SELECT count(*) FROM changes)`).
		Scan(&postpressDeliveries, &changes); err != nil {
		t.Fatal(err)
	}
	if postpressDeliveries != load.acked {
		t.Errorf("%d postpress webhooks answered 200, %d deliveries stored", load.acked, postpressDeliveries)
	}

	// The change log, read once, is the reference every watcher must
	// have seen.
	logCursors, logIDs := readLog(t, ctx, c.replica(readFrom), start, changes)
	if len(logCursors) != changes {
		t.Fatalf("the change log holds %d changes, a watch from the start read %d", changes, len(logCursors))
	}
	if dup := firstDuplicate(logCursors); dup != "" {
		t.Errorf("cursor %s appears twice in the change log", dup)
	}
	// Changes per event: every version answered 200 is one change (each
	// is newer than the one before); none lost, none applied twice.
	perEvent := map[string]int{}
	for _, id := range logIDs {
		perEvent[id]++
	}
	for id, v := range load.versions {
		if perEvent[id] != v {
			t.Errorf("postpress event %s: %d versions answered 200, %d changes", id, v, perEvent[id])
		}
	}

	for i, w := range ws.watchers {
		pollUntil(t, fmt.Sprintf("watcher %d to catch up", i), 20*time.Second, func() bool {
			cursors, _ := w.seen()
			return len(cursors) >= changes
		})
		cursors, _ := w.seen()
		if !slices.Equal(cursors, logCursors) {
			t.Errorf("watcher %d (home replica %d) saw %d changes, not the log's %d in its order",
				i, w.home, len(cursors), len(logCursors))
		}
	}

	// The store holds what the providers last said.
	stored := map[string]*calsyncv1.CalendarEvent{}
	pageToken := ""
	for {
		got := listEventsREST(t, c.replica(readFrom).url("/v1/calendars/-/events?page_size=1000&page_token="+pageToken))
		for _, e := range got.GetEvents() {
			stored[e.GetCalendarId()+"/"+e.GetProviderEventId()] = e
		}
		if pageToken = got.GetNextPageToken(); pageToken == "" {
			break
		}
	}
	for id, v := range load.versions {
		key := model.CalendarID(model.ProviderPostpress, "acct", load.calendar[id]) + "/" + id
		if e := stored[key]; e.GetTitle() != fmt.Sprintf("%s v%d", id, v) {
			t.Errorf("postpress event %s: stored %q, last sent version %d", id, e.GetTitle(), v)
		}
	}
	for _, cal := range recallCals {
		checkRecallCalendar(t, c, cal.ID)
	}
	return logCursors, stored
}

// leaders returns the live replicas whose metrics say they lead the
// cluster.
func (c *testCluster) leaders(t *testing.T) []int {
	t.Helper()
	var out []int
	for i := range c.size() {
		if p := c.replica(i); p != nil && scrape(t, p.url("/metrics"), "")["calsync_leader"] == 1 {
			out = append(out, i)
		}
	}
	return out
}

// checkRecallCalendar requires calsync's events of the Recall calendar
// calID to have the titles the fake holds.
func checkRecallCalendar(t *testing.T, c *testCluster, calID string) {
	t.Helper()
	var want, got []string
	for _, e := range c.fake.Events(calID) {
		want = append(want, fmt.Sprint(e.Raw["summary"]))
	}
	events := listEventsREST(t, c.replica(0).url("/v1/calendars/"+model.CalendarID(model.ProviderRecall, "", calID)+"/events?page_size=1000"))
	for _, e := range events.GetEvents() {
		got = append(got, e.GetTitle())
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("Recall calendar %s: stored %q, Recall holds %q", calID, got, want)
	}
}

// firstDuplicate returns a string that appears twice in s, or "".
func firstDuplicate(s []string) string {
	seen := map[string]bool{}
	for _, x := range s {
		if seen[x] {
			return x
		}
		seen[x] = true
	}
	return ""
}

// TestClusterStalledReplicaFenced pauses (SIGSTOP) the replica fetching
// a Recall calendar while it holds the calendar's claim; another replica
// takes the work over once the claim expires and stores the calendar's
// newer state. When the paused replica resumes (SIGCONT) with its stale
// answer, it must not apply it: the newer state stays, and no change is
// added.
func TestClusterStalledReplicaFenced(t *testing.T) {
	// A short claim TTL keeps the test short; the kill test measures the
	// default.
	c := startCluster(t, 3, "CALSYNC_CLAIM_TTL=3s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := c.pg(ctx)
	client := &http.Client{Timeout: 10 * time.Second}
	// Recall's clock stands still, so the newer state carries the same
	// updated_at as the stale one: only fencing tells them apart.
	c.fake.SetNow(time.Now().UTC().Truncate(time.Second))
	cal := c.fake.PutCalendar(recalltest.Calendar{PlatformEmail: "stalled@example.com"})
	ev := putRecallEvents(c.fake, cal.ID, "stale", 1)[0]

	stalled, hint := c.holdFetch(t, client, 0, cal.ID)
	c.signal(stalled, syscall.SIGSTOP)
	stoppedAt := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			c.signal(stalled, syscall.SIGCONT)
		}
	}()
	c.fake.UpdateEvent(ev.ID, func(e *recalltest.Event) { e.Raw["summary"] = "fresh" })
	pollUntil(t, "another replica to take the stalled replica's work over", 40*time.Second, func() bool {
		return deliveryState(t, pg, hint.DeliveryID) == calsyncv1.DeliveryState_DELIVERY_STATE_DONE
	})
	takeover := time.Since(stoppedAt)
	t.Logf("SIGSTOP of replica %d: its claimed work completed elsewhere %v later", stalled, takeover.Round(time.Millisecond))
	if takeover > takeoverBound {
		t.Errorf("the stalled replica's work took %v to complete elsewhere, want at most %v", takeover, takeoverBound)
	}
	other := (stalled + 1) % c.size()
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
	titles := func() []string {
		var out []string
		for _, e := range listEventsREST(t, c.replica(other).url("/v1/calendars/"+calID+"/events")).GetEvents() {
			out = append(out, e.GetTitle())
		}
		return out
	}
	countChanges := func() int {
		var n int
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM changes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := titles(); !slices.Equal(got, []string{"fresh"}) {
		t.Fatalf("after the takeover the calendar holds %q, want the fresh state", got)
	}
	before := countChanges()

	// The stalled replica wakes up and gets Recall's old answer.
	c.signal(stalled, syscall.SIGCONT)
	resumed = true
	c.taps[stalled].releaseHeld()
	pollUntil(t, "the stalled replica to receive its stale answer", 20*time.Second, func() bool {
		return c.taps[stalled].releasedCount() == 1
	})
	// It must apply nothing of it; watch for a while, since the failure
	// would be a write that happens.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got := titles(); !slices.Equal(got, []string{"fresh"}) {
			t.Fatalf("the stalled replica overwrote the newer state: the calendar holds %q", got)
		}
		if n := countChanges(); n != before {
			t.Fatalf("the stalled replica added %d changes after losing its claim", n-before)
		}
		if s := deliveryState(t, pg, hint.DeliveryID); s != calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
			t.Fatalf("the hint went back to %v", s)
		}
	}
	// The resumed replica works again: a new hint sent to it is processed.
	c.fake.UpdateEvent(ev.ID, func(e *recalltest.Event) { e.Raw["summary"] = "fresher" })
	again := c.sendHint(t, client, stalled, cal.ID)
	pollUntil(t, "a hint sent to the resumed replica to be processed", 20*time.Second, func() bool {
		return deliveryState(t, pg, again.DeliveryID) == calsyncv1.DeliveryState_DELIVERY_STATE_DONE
	})
	checkRecallCalendar(t, c, cal.ID)
}

// TestClusterRecallHints: Recall hints for one calendar sent to several
// replicas cause one fetch (one Svix message sent to all of them, and
// hints that arrive at different replicas while a fetch is under way ride
// along in the next one), and Recall's rate limit on event lists holds
// for the cluster, not per replica.
func TestClusterRecallHints(t *testing.T) {
	// Replicas claim only when they receive a delivery, never by polling,
	// so the test knows which replica fetches what.
	c := startCluster(t, 3, "CALSYNC_CLAIM_POLL_INTERVAL=1h")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := c.pg(ctx)
	client := &http.Client{Timeout: 10 * time.Second}
	done := func(id string) bool {
		return deliveryState(t, pg, id) == calsyncv1.DeliveryState_DELIVERY_STATE_DONE
	}

	t.Run("OneMessageToEveryReplica", func(t *testing.T) {
		cal := c.fake.PutCalendar(recalltest.Calendar{})
		putRecallEvents(c.fake, cal.ID, "one message", 2)
		body := syncEventsBody(cal.ID)
		h := recallSigned(t, "svix", recallSecret, time.Now(), body)
		answers := make([]ingestAnswer, c.size())
		var wg sync.WaitGroup
		for i := range c.size() {
			wg.Go(func() {
				code, b := httpDo(t, http.MethodPost, c.replica(i).url("/v1/webhooks/recall"), body, h)
				if code != http.StatusOK {
					t.Errorf("replica %d = %d: %s", i, code, b)
					return
				}
				answers[i] = decodeAnswer(t, b)
			})
		}
		wg.Wait()
		duplicates := 0
		for i, a := range answers {
			if a.DeliveryID != answers[0].DeliveryID {
				t.Errorf("replica %d stored delivery %s, replica 0 %s", i, a.DeliveryID, answers[0].DeliveryID)
			}
			if a.Duplicate {
				duplicates++
			}
		}
		if duplicates != c.size()-1 {
			t.Errorf("%d of %d answers say duplicate, want all but one", duplicates, c.size())
		}
		pollUntil(t, "the hint to be processed", 20*time.Second, func() bool { return done(answers[0].DeliveryID) })
		if n := c.log.eventLists(cal.ID); n != 1 {
			t.Errorf("one hint sent to %d replicas: %d event lists, want 1", c.size(), n)
		}
		checkRecallCalendar(t, c, cal.ID)
	})

	t.Run("HintsDuringAFetchCoalesce", func(t *testing.T) {
		cal := c.fake.PutCalendar(recalltest.Calendar{})
		putRecallEvents(c.fake, cal.ID, "coalesced", 2)
		holder, first := c.holdFetch(t, client, 0, cal.ID)
		var later []ingestAnswer
		for i := range c.size() {
			later = append(later, c.sendHint(t, client, i, cal.ID))
		}
		c.fake.UpdateEvent(c.fake.Events(cal.ID)[0].ID, func(e *recalltest.Event) { e.Raw["summary"] = "coalesced, changed" })
		c.taps[holder].releaseHeld()
		pollUntil(t, "every hint to be processed", 20*time.Second, func() bool {
			if !done(first.DeliveryID) {
				return false
			}
			for _, a := range later {
				if !done(a.DeliveryID) {
					return false
				}
			}
			return true
		})
		if n := c.log.eventLists(cal.ID); n != 2 {
			t.Errorf("a hint, then %d more to %d replicas during its fetch: %d event lists, want 2", len(later), c.size(), n)
		}
		checkRecallCalendar(t, c, cal.ID)
	})

	t.Run("RateLimitHoldsForTheCluster", func(t *testing.T) {
		// A burst's worth of calendars hinted to replica 0, then as many
		// to replica 1 (each replica claims what it receives: the others
		// do not poll): replica 1 finds the bucket replica 0 emptied.
		wave := func(replica int) []string {
			var cals []string
			for range eventListBurst {
				cal := c.fake.PutCalendar(recalltest.Calendar{})
				putRecallEvents(c.fake, cal.ID, "limited", 1)
				cals = append(cals, cal.ID)
			}
			var answers []ingestAnswer
			for _, cal := range cals {
				answers = append(answers, c.sendHint(t, client, replica, cal))
			}
			for _, a := range answers {
				pollUntil(t, "every limited hint to be processed", 30*time.Second, func() bool { return done(a.DeliveryID) })
			}
			return cals
		}
		cals := append(wave(0), wave(1)...)
		fetchers := map[int]bool{}
		for _, r := range c.log.requests(func(r recallRequest) bool { return slices.Contains(cals, r.CalendarID) }) {
			fetchers[r.Replica] = true
		}
		if len(fetchers) < 2 {
			t.Fatalf("replica %v made every event list: nothing here shows the limit is shared", fetchers)
		}
		// Every event list the cluster made since it started, this
		// subtest's and the others', drew on one bucket.
		all := c.log.requests(func(r recallRequest) bool { return r.Endpoint == recalltest.EndpointEventList })
		checkTokenBucket(t, all, eventListInterval, eventListBurst)
		t.Logf("%d event lists by replicas %v over %v", len(all), fetchers, all[len(all)-1].At.Sub(all[0].At).Round(time.Millisecond))
	})
}

// checkTokenBucket requires reqs to fit one token bucket that holds burst
// tokens, starts full and gains one every interval: replaying them, no
// request finds the bucket empty (with half a token of leeway
// for the time a request takes to reach the fake).
func checkTokenBucket(t *testing.T, reqs []recallRequest, interval time.Duration, burst int) {
	t.Helper()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].At.Before(reqs[j].At) })
	tokens := float64(burst)
	for i, r := range reqs {
		if i > 0 {
			tokens = min(float64(burst), tokens+float64(r.At.Sub(reqs[i-1].At))/float64(interval))
		}
		if tokens < 0.5 {
			t.Errorf("event list %d (replica %d at %s) came with %.2f tokens left in a bucket of %d gaining one every %v: the replicas exceed the limit together",
				i+1, r.Replica, r.At.Format("15:04:05.000"), tokens, burst, interval)
			return
		}
		tokens--
	}
}
