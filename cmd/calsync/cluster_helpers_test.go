package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// recallRequest is one request a replica made to the fake Recall API.
type recallRequest struct {
	Replica    int
	Endpoint   string // a recalltest endpoint name
	CalendarID string // the Recall calendar of an event list; empty otherwise
	At         time.Time
}

// recallLog records the requests of every replica to the fake Recall API.
type recallLog struct {
	mu   sync.Mutex
	reqs []recallRequest
}

func (l *recallLog) add(r recallRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, r)
}

// requests returns the requests recorded so far that match keep.
func (l *recallLog) requests(keep func(recallRequest) bool) []recallRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []recallRequest
	for _, r := range l.reqs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// eventLists counts the event lists of Recall calendar calendarID.
func (l *recallLog) eventLists(calendarID string) int {
	return len(l.requests(func(r recallRequest) bool {
		return r.Endpoint == recalltest.EndpointEventList && r.CalendarID == calendarID
	}))
}

// recallTap stands between one replica and the fake Recall API: it tells
// which replica sent each request, and it can hold back the answers to
// the event lists of one calendar. A held answer is read from the fake
// when the request arrives and handed over only when released, so the
// replica gets the calendar as it was when it asked: the stale answer of
// a stalled worker.
type recallTap struct {
	replica int
	fake    *recalltest.Server
	log     *recallLog
	srv     *httptest.Server

	mu       sync.Mutex
	holdCal  string        // event lists of this calendar are held
	release  chan struct{} // closed to let held answers go
	held     int           // answers held now
	released int           // held answers handed over
}

func newRecallTap(t *testing.T, replica int, fake *recalltest.Server, log *recallLog) *recallTap {
	t.Helper()
	tp := &recallTap{replica: replica, fake: fake, log: log}
	tp.srv = httptest.NewServer(http.HandlerFunc(tp.serve))
	t.Cleanup(func() {
		tp.releaseHeld()
		tp.srv.Close()
	})
	return tp
}

func (tp *recallTap) serve(w http.ResponseWriter, r *http.Request) {
	endpoint, calendarID := recallEndpoint(r)
	tp.log.add(recallRequest{Replica: tp.replica, Endpoint: endpoint, CalendarID: calendarID, At: time.Now()})
	req, err := http.NewRequestWithContext(r.Context(), r.Method, tp.fake.URL+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	tp.mu.Lock()
	release := tp.release
	hold := endpoint == recalltest.EndpointEventList && calendarID != "" && calendarID == tp.holdCal && release != nil
	if hold {
		tp.held++
	}
	tp.mu.Unlock()
	if hold {
		select {
		case <-release:
		case <-r.Context().Done(): // the replica died or gave up
		}
		tp.mu.Lock()
		tp.held--
		if r.Context().Err() == nil {
			tp.released++
		}
		tp.mu.Unlock()
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// recallEndpoint names the endpoint of r and, for an event list, its
// calendar.
func recallEndpoint(r *http.Request) (endpoint, calendarID string) {
	switch p := r.URL.Path; {
	case p == "/api/v2/calendar-events/":
		return recalltest.EndpointEventList, r.URL.Query().Get("calendar_id")
	case strings.HasPrefix(p, "/api/v2/calendar-events/"):
		return recalltest.EndpointEventRetrieve, ""
	default:
		return recalltest.EndpointCalendarRetrieve, ""
	}
}

// hold holds back the answers to event lists of calendarID until
// releaseHeld.
func (tp *recallTap) hold(calendarID string) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.holdCal, tp.release = calendarID, make(chan struct{})
}

// releaseHeld hands the held answers over and holds nothing more.
func (tp *recallTap) releaseHeld() {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.release != nil {
		close(tp.release)
	}
	tp.holdCal, tp.release = "", nil
}

// heldNow is how many answers wait for releaseHeld.
func (tp *recallTap) heldNow() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.held
}

// releasedCount is how many held answers were handed over to a live
// replica.
func (tp *recallTap) releasedCount() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.released
}

// testCluster is several real `calsync serve` processes on one database of
// the test binary's private PostgreSQL, each talking to the same fake
// Recall API through a tap of its own.
type testCluster struct {
	t    *testing.T
	db   string
	fake *recalltest.Server
	log  *recallLog
	taps []*recallTap
	env  []string // extra environment for every replica

	mu    sync.Mutex
	procs []*process // nil while a replica is down
}

// clusterEnv is the configuration every replica shares, besides --db and
// the Recall API URL.
func clusterEnv(fake *recalltest.Server) []string {
	return []string{
		"CALSYNC_DB_MAX_CONNS=6",
		"CALSYNC_POSTPRESS_AUTH_SECRETS=" + postpressSecret,
		"CALSYNC_RECALL_WEBHOOK_SECRETS=" + recallSecret,
		"CALSYNC_RECALL_API_KEY=" + fake.APIKey(),
		// The periodic full reconciliation would add Recall requests the
		// tests do not send; its leader election is tested elsewhere.
		"CALSYNC_RECALL_RESYNC_INTERVAL=0",
	}
}

// startCluster starts n replicas, one after the other, on a fresh
// database.
func startCluster(t *testing.T, n int, extraEnv ...string) *testCluster {
	t.Helper()
	fake := recalltest.New(t)
	c := &testCluster{t: t, db: pgtest.NewDatabase(t), fake: fake, log: &recallLog{}, procs: make([]*process, n)}
	c.env = append(clusterEnv(fake), extraEnv...)
	for i := range n {
		c.taps = append(c.taps, newRecallTap(t, i, fake, c.log))
	}
	for i := range n {
		c.start(i)
	}
	return c
}

// start starts replica i (again, after a kill: on new ports).
func (c *testCluster) start(i int) {
	c.t.Helper()
	env := append([]string{"CALSYNC_DB=" + c.db, "CALSYNC_RECALL_API_URL=" + c.taps[i].srv.URL}, c.env...)
	p := startBinary(c.t, env)
	c.mu.Lock()
	c.procs[i] = p
	c.mu.Unlock()
}

// replica returns the process of replica i, or nil while it is down.
func (c *testCluster) replica(i int) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i]
}

func (c *testCluster) size() int { return len(c.taps) }

// kill kills replica i with SIGKILL and waits until it is gone.
func (c *testCluster) kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[i]
	c.procs[i] = nil
	c.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("replica %d still runs after SIGKILL", i)
	}
}

// signal sends sig to replica i.
func (c *testCluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	if err := c.replica(i).cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// pg connects to the cluster's database.
func (c *testCluster) pg(ctx context.Context) *pgx.Conn {
	c.t.Helper()
	conn, err := pgx.Connect(ctx, c.db)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// deliveryState reads the state of delivery id (as a webhook's answer
// gives it) from the database.
func deliveryState(t *testing.T, pg *pgx.Conn, id string) calsyncv1.DeliveryState {
	t.Helper()
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		t.Fatalf("delivery id %q: %v", id, err)
	}
	var state int32
	if err := pg.QueryRow(context.Background(), `SELECT state FROM deliveries WHERE id = $1`, n).Scan(&state); err != nil {
		t.Fatalf("delivery %s: %v", id, err)
	}
	return calsyncv1.DeliveryState(state)
}

// sendAnywhere posts a webhook to replica first, and, while a replica is
// down or answers anything but 200, to the next ones in turn, as a
// provider retries behind a load balancer, until one answers 200 or
// within passes. It returns the answer and the replica that gave it.
func (c *testCluster) sendAnywhere(client *http.Client, first int, provider string, body []byte, h http.Header, within time.Duration) (ingestAnswer, int, error) {
	deadline := time.Now().Add(within)
	var last error
	for i := first; ; i++ {
		if time.Now().After(deadline) {
			return ingestAnswer{}, 0, fmt.Errorf("no replica answered 200 within %v: %v", within, last)
		}
		if i > first && i%c.size() == first%c.size() {
			// Every replica was tried: wait a moment before the next
			// round, as a provider's retry would.
			time.Sleep(20 * time.Millisecond)
		}
		slot := i % c.size()
		p := c.replica(slot)
		if p == nil {
			last = fmt.Errorf("replica %d is down", slot)
			continue
		}
		req, err := http.NewRequest(http.MethodPost, p.url("/v1/webhooks/"+provider), bytes.NewReader(body))
		if err != nil {
			return ingestAnswer{}, 0, err
		}
		for k, vs := range h {
			req.Header[k] = vs
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("replica %d: %d %s %v", slot, resp.StatusCode, b, err)
			continue
		}
		var a ingestAnswer
		if err := json.Unmarshal(b, &a); err != nil || a.DeliveryID == "" {
			return ingestAnswer{}, 0, fmt.Errorf("replica %d answered %s: %v", slot, b, err)
		}
		return a, slot, nil
	}
}

// clusterWatcher is a WatchEvents stream that follows the cluster's change
// log from a start cursor on its home replica and, when that replica
// dies, resumes from its last cursor on the next live one.
type clusterWatcher struct {
	home int

	mu      sync.Mutex
	cursors []string
	events  []string // the provider's event id (or calendar id) of each change
	resumes int
	err     error
}

// run follows the log until ctx ends.
func (w *clusterWatcher) run(ctx context.Context, c *testCluster, after string) {
	for slot := w.home; ctx.Err() == nil; slot = (slot + 1) % c.size() {
		p := c.replica(slot)
		if p == nil {
			continue
		}
		after = w.follow(ctx, p, after)
		if ctx.Err() == nil {
			w.mu.Lock()
			w.resumes++
			w.mu.Unlock()
			// A replica's stream ended (it died): try the next one after a
			// moment, as a client's backoff would.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// follow streams from p after cursor after until the stream ends and
// returns the last cursor seen.
func (w *clusterWatcher) follow(ctx context.Context, p *process, after string) string {
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return after
	}
	defer conn.Close()
	stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{AfterCursor: after})
	if err != nil {
		return after
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return after
		}
		if ch := resp.GetChange(); ch != nil {
			id := ch.GetEvent().GetProviderEventId()
			if id == "" {
				id = ch.GetCalendar().GetId()
			}
			w.mu.Lock()
			w.cursors = append(w.cursors, ch.GetCursor())
			w.events = append(w.events, id)
			w.mu.Unlock()
			after = ch.GetCursor()
		} else if b := resp.GetBookmark(); b.GetCursor() != "" {
			after = b.GetCursor()
		}
	}
}

// seen returns a copy of the cursors and ids received so far.
func (w *clusterWatcher) seen() ([]string, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.cursors), slices.Clone(w.events)
}

// startCursor opens a watch on replica i and returns the cursor of its
// first bookmark: where the log stands now.
func startCursor(t *testing.T, ctx context.Context, p *process) string {
	t.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetBookmark() == nil {
		t.Fatalf("first answer of a watch: %v, %v", resp, err)
	}
	return resp.GetBookmark().GetCursor()
}

// readLog reads the change log after cursor from replica p until it has
// want changes, and returns their cursors and ids in log order.
func readLog(t *testing.T, ctx context.Context, p *process, after string, want int) ([]string, []string) {
	t.Helper()
	w := &clusterWatcher{}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A stream that ends with an error (a pooled connection to a
	// PostgreSQL that restarted, say) is resumed from its last cursor, as
	// a client does, a few times at most.
	const maxResumes = 3
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil && w.resumes <= maxResumes {
			after = w.follow(ctx, p, after)
			if ctx.Err() == nil {
				w.mu.Lock()
				w.resumes++
				t.Logf("the reading stream ended (%v); resuming after %s", w.err, after)
				w.mu.Unlock()
			}
		}
	}()
	for {
		if cursors, _ := w.seen(); len(cursors) >= want || ctx.Err() != nil {
			break
		}
		select {
		case <-done:
			w.mu.Lock()
			err, resumes := w.err, w.resumes
			w.mu.Unlock()
			if ctx.Err() != nil {
				cursors, _ := w.seen()
				t.Fatalf("the change log read %d of %d changes in 30 s (the stream resumed %d times; last error: %v)", len(cursors), want, resumes, err)
			}
			t.Fatalf("the reading stream ended %d times; last: %v", maxResumes+1, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	return w.seen()
}

// snapshotView is a watch opened with an initial snapshot: from the
// snapshot and the live changes after it, it keeps every event's title by
// calendar and provider event id, as a client's cache would.
type snapshotView struct {
	mu       sync.Mutex
	titles   map[string]string
	complete string   // the cursor of the bookmark that ended the snapshot
	live     []string // the cursors of the live changes after it
	err      error
}

// run follows p's change log, snapshot first, until ctx ends or the
// stream fails.
func (v *snapshotView) run(ctx context.Context, p *process) {
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		defer conn.Close()
		var stream calsyncv1.CalendarService_WatchEventsClient
		stream, err = calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{InitialSnapshot: true})
		for err == nil {
			var resp *calsyncv1.WatchEventsResponse
			if resp, err = stream.Recv(); err == nil {
				v.apply(resp)
			}
		}
	}
	if ctx.Err() == nil {
		v.mu.Lock()
		v.err = err
		v.mu.Unlock()
	}
}

func (v *snapshotView) apply(resp *calsyncv1.WatchEventsResponse) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b := resp.GetBookmark(); b.GetSnapshotComplete() {
		v.complete = b.GetCursor()
	}
	ch := resp.GetChange()
	if ch == nil {
		return
	}
	if ch.GetCursor() != "" {
		v.live = append(v.live, ch.GetCursor())
	}
	if e := ch.GetEvent(); e != nil {
		key := e.GetCalendarId() + "/" + e.GetProviderEventId()
		if e.GetDeleted() {
			delete(v.titles, key)
		} else {
			v.titles[key] = e.GetTitle()
		}
	}
}

// state returns a copy of what the view holds.
func (v *snapshotView) state() (titles map[string]string, complete string, live []string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	titles = make(map[string]string, len(v.titles))
	for k, t := range v.titles {
		titles[k] = t
	}
	return titles, v.complete, slices.Clone(v.live), v.err
}
