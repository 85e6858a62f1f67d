package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
)

// Watcher is one watch stream the tool holds open, over gRPC or REST
// NDJSON. It resumes from its last cursor whenever the stream breaks, as a
// real subscriber does, and checks what it gets.
type Watcher struct {
	Name        string
	CalendarIDs []string
	REST        bool
	Checker     *Checker

	mu     sync.Mutex
	cursor string
	lat    []time.Duration
	// lastChange is when the newest checked change arrived.
	lastChange time.Time
	// lastSeq is the previous change's log position; only the goroutine
	// that reads the stream uses it.
	lastSeq uint64
	// Others counts changes not made by the postpress load (Recall events,
	// calendars).
	Others atomic.Int64
	// Restarts counts how many times the stream was reopened.
	Restarts atomic.Int64
	ready    chan struct{}
	once     sync.Once
	// keepLatency is false for streams whose latencies are not reported,
	// so ten thousand idle streams keep nothing.
	keepLatency bool
}

// NewWatcher returns a watcher for calendarIDs (all when empty) whose
// checker starts at base.
func NewWatcher(name string, calendarIDs []string, rest bool, base map[string]int) *Watcher {
	return &Watcher{Name: name, CalendarIDs: calendarIDs, REST: rest, Checker: NewChecker(base), ready: make(chan struct{}), keepLatency: true}
}

// Ready is closed once the stream holds its first bookmark: from then on it
// misses nothing.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Cursor returns the newest cursor received.
func (w *Watcher) Cursor() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cursor
}

// LastChange returns when the newest checked change arrived.
func (w *Watcher) LastChange() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastChange
}

// TakeLatencies returns and forgets the change latencies recorded so far.
func (w *Watcher) TakeLatencies() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.lat
	w.lat = nil
	return l
}

func (w *Watcher) handle(resp *calsyncv1.WatchEventsResponse, now time.Time) {
	if b := resp.GetBookmark(); b != nil {
		w.mu.Lock()
		w.cursor = b.GetCursor()
		w.mu.Unlock()
		w.once.Do(func() { close(w.ready) })
		return
	}
	c := resp.GetChange()
	if c == nil {
		return
	}
	ev := c.GetEvent()
	ver, sent, ok := parseTitle(ev.GetTitle())
	if ev == nil || ev.GetProvider() != model.ProviderPostpress || !ok {
		w.mu.Lock()
		w.cursor = c.GetCursor()
		w.mu.Unlock()
		w.Others.Add(1)
		return
	}
	seq, seqOK := cursorSeq(c.GetCursor())
	w.Checker.Observe(ev.GetProviderEventId(), ver, c.GetCursor(), seqOK && seq <= w.lastSeq)
	w.mu.Lock()
	w.cursor = c.GetCursor()
	w.lastChange = now
	if seqOK {
		w.lastSeq = seq
	}
	if w.keepLatency {
		w.lat = append(w.lat, now.Sub(sent))
	}
	w.mu.Unlock()
}

// Run keeps the stream open until ctx is done, resuming after every break.
func (w *Watcher) Run(ctx context.Context, conn *grpc.ClientConn, httpBase string) {
	for ctx.Err() == nil {
		if w.REST {
			w.runREST(ctx, httpBase)
		} else {
			w.runGRPC(ctx, conn)
		}
		if ctx.Err() != nil {
			return
		}
		w.Restarts.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *Watcher) request() *calsyncv1.WatchEventsRequest {
	return &calsyncv1.WatchEventsRequest{AfterCursor: w.Cursor(), CalendarIds: w.CalendarIDs}
}

func (w *Watcher) runGRPC(ctx context.Context, conn *grpc.ClientConn) {
	stream, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, w.request(), watchCallOption())
	if err != nil {
		return
	}
	// Every response is decoded into resp, which handle does not keep.
	resp := new(calsyncv1.WatchEventsResponse)
	for {
		if err := stream.RecvMsg(resp); err != nil {
			return
		}
		w.handle(resp, time.Now())
	}
}

func (w *Watcher) runREST(ctx context.Context, base string) {
	q := url.Values{}
	if c := w.Cursor(); c != "" {
		q.Set("after_cursor", c)
	}
	for _, id := range w.CalendarIDs {
		q.Add("calendar_ids", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events:watch?"+q.Encode(), nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var m calsyncv1.WatchEventsResponse
	for sc.Scan() {
		if decodeWatchLine(sc.Bytes(), &m) != nil {
			return
		}
		w.handle(&m, time.Now())
	}
}

// dialConns opens n gRPC connections to addr; streams spread over them as
// they would over a fleet of subscriber processes.
func dialConns(addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		// HTTP/2 windows sized for a catch-up: with gRPC's defaults a
		// single replaying stream waited on flow control, not on either
		// side's CPU (174–199k changes/s against 208–227k from a million).
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20), grpc.WithReadBufferSize(256<<10))
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		conns[i] = c
	}
	return conns, nil
}

// WatchSet is a group of watchers run together.
type WatchSet struct {
	Watchers []*Watcher
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	conns    []*grpc.ClientConn
}

// Start opens every watcher and waits until each holds its first bookmark.
func (s *WatchSet) Start(ctx context.Context, grpcAddr, httpBase string, nconns int) error {
	conns, err := dialConns(grpcAddr, nconns)
	if err != nil {
		return err
	}
	s.conns = conns
	ctx, s.cancel = context.WithCancel(ctx)
	for i, w := range s.Watchers {
		s.wg.Go(func() { w.Run(ctx, conns[i%len(conns)], httpBase) })
	}
	deadline := time.After(2 * time.Minute)
	for _, w := range s.Watchers {
		select {
		case <-w.Ready():
		case <-deadline:
			return fmt.Errorf("watcher %s got no bookmark within 2 minutes", w.Name)
		}
	}
	return nil
}

// Stop closes every stream.
func (s *WatchSet) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	for _, c := range s.conns {
		c.Close()
	}
}

// WaitCaught waits until every watcher has seen the versions want says it
// should (filtered by calendar), or until timeout.
func (s *WatchSet) WaitCaught(want func(*Watcher) map[string]int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for _, w := range s.Watchers {
		m := want(w)
		for !w.Checker.Caught(m) {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return true
}

// StreamCheck sums what the checkers of a set found.
type StreamCheck struct {
	Streams    int   `json:"streams"`
	Received   int64 `json:"changes_received"`
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	// BeforeStart are the duplicates that were changes committed before
	// the stream started (see Checker.BeforeStart).
	BeforeStart int64 `json:"duplicates_from_before_start"`
	// OrderDisagreements counts unfiltered streams whose order of cursors
	// differs from the first unfiltered stream's.
	OrderDisagreements int `json:"order_disagreements"`
	// CursorRegressions counts changes whose cursor was not above the
	// previous one on the same stream.
	CursorRegressions int64 `json:"cursor_regressions"`
	Restarts          int64 `json:"restarts"`
	// DuplicateSamples are the first duplicates seen, with their cursors.
	DuplicateSamples []string `json:"duplicate_samples,omitempty"`
}

// Check compares every watcher with want and the unfiltered ones with each
// other.
func (s *WatchSet) Check(want func(*Watcher) map[string]int) StreamCheck {
	var r StreamCheck
	var ref *Watcher
	for _, w := range s.Watchers {
		r.Streams++
		r.Received += w.Checker.Received
		r.Duplicates += w.Checker.Duplicates
		r.BeforeStart += w.Checker.BeforeStart
		r.CursorRegressions += w.Checker.Regressions
		r.Missing += w.Checker.Missing(want(w))
		r.Restarts += w.Restarts.Load()
		if len(r.DuplicateSamples) < maxDuplicateSamples {
			w.Checker.mu.Lock()
			for _, d := range w.Checker.DuplicateSamples {
				if len(r.DuplicateSamples) < maxDuplicateSamples {
					r.DuplicateSamples = append(r.DuplicateSamples, w.Name+": "+d)
				}
			}
			w.Checker.mu.Unlock()
		}
		if len(w.CalendarIDs) == 0 {
			if ref == nil {
				ref = w
			} else if w.Checker.Order() != ref.Checker.Order() {
				r.OrderDisagreements++
			}
		}
	}
	return r
}

// Latencies merges and forgets the change latencies of every watcher.
func (s *WatchSet) Latencies() Summary {
	var all []time.Duration
	for _, w := range s.Watchers {
		all = append(all, w.TakeLatencies()...)
	}
	return Summarize(all)
}

// cursorSeq reads the change log position out of a cursor. Cursors are
// opaque to clients; this diagnostic knows calsync's current encoding
// (version byte, 8-byte store tag, big-endian sequence, checksum) only to
// prove cursor order directly, and reports ok=false for anything else.
func cursorSeq(cursor string) (uint64, bool) {
	var raw [21]byte
	if base64.RawURLEncoding.DecodedLen(len(cursor)) != len(raw) {
		return 0, false
	}
	n, err := base64.RawURLEncoding.Decode(raw[:], []byte(cursor))
	if err != nil || n != len(raw) || raw[0] != 1 {
		return 0, false
	}
	return binary.BigEndian.Uint64(raw[9:17]), true
}
