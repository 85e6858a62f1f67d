package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// Workload is the shape of the synthetic calendars: postpress calendars
// whose events are rewritten over and over, each rewrite a new version
// whose title carries its version and the instant it was meant to be sent,
// plus Recall calendars whose webhooks are hints answered by the fake
// Recall API.
type Workload struct {
	Calendars         int
	EventsPerCalendar int
	// RecallCalendars are the Recall calendar ids hinted at, if any.
	RecallCalendars []string
	// RecallEvery makes every n-th webhook a Recall hint (0: none).
	RecallEvery int

	// versions holds the last version of each event the server answered
	// 200 to; a single worker owns each event, so there is no lock.
	versions []int
	// pending holds, per event, a body sent without a 200 answer yet; it
	// is sent again byte for byte so the server's dedup can absorb it.
	pending [][]byte
}

// NewWorkload returns a workload over calendars × events postpress events.
func NewWorkload(calendars, events int) *Workload {
	n := calendars * events
	return &Workload{Calendars: calendars, EventsPerCalendar: events, versions: make([]int, n), pending: make([][]byte, n)}
}

// Events is the number of postpress events.
func (w *Workload) Events() int { return len(w.versions) }

// CalendarOf returns the postpress calendar id of event i.
func (w *Workload) CalendarOf(i int) string {
	return fmt.Sprintf("c%05d@bench.example", i/w.EventsPerCalendar)
}

// EventKey returns the postpress event id of event i.
func EventKey(i int) string { return "e" + strconv.Itoa(i) }

// Versions returns the accepted versions keyed by event id.
func (w *Workload) Versions() map[string]int {
	m := make(map[string]int, len(w.versions))
	for i, v := range w.versions {
		if v > 0 {
			m[EventKey(i)] = v
		}
	}
	return m
}

// CalendarVersions returns the versions in all of the events of calendar
// ci: what a stream filtered to that calendar must end with.
func (w *Workload) CalendarVersions(all map[string]int, ci int) map[string]int {
	m := make(map[string]int, w.EventsPerCalendar)
	for j := range w.EventsPerCalendar {
		k := EventKey(ci*w.EventsPerCalendar + j)
		m[k] = all[k]
	}
	return m
}

// benchTitle is the title of version ver sent at sent.
func benchTitle(ver int, sent time.Time) string {
	return "bench " + strconv.Itoa(ver) + " " + strconv.FormatInt(sent.UnixNano(), 10)
}

// parseTitle reads what benchTitle wrote; ok is false for other titles.
// It runs once per change a watcher receives, so it allocates nothing.
func parseTitle(title string) (ver int, sent time.Time, ok bool) {
	rest, ok := strings.CutPrefix(title, "bench ")
	if !ok {
		return 0, time.Time{}, false
	}
	v, ns, ok := strings.Cut(rest, " ")
	if !ok {
		return 0, time.Time{}, false
	}
	ver, err1 := strconv.Atoi(v)
	nanos, err2 := strconv.ParseInt(ns, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return ver, time.Unix(0, nanos), true
}

// postpressBody builds a postpress calendar_event_updated webhook for
// version ver of event i, sent at sent. updated_at is the send time, so
// versions are ordered as postpress would order them.
func (w *Workload) postpressBody(i, ver int, sent time.Time) []byte {
	day := 1 + i%27
	return fmt.Appendf(nil, `{"event":"calendar_event_updated","webhook_name":"bench","account_id":"bench","id":%q,"master_event_id":"","calendar_id":%q,`+
		`"created_at":"2026-01-01T00:00:00Z","updated_at":%q,"title":%q,"is_cancelled":false,"is_all_day":false,"is_attendees_list_hidden":false,"attendees":[],`+
		`"start":{"date_time":"2030-02-%02dT10:00:00Z","time_zone":"UTC"},"end":{"date_time":"2030-02-%02dT11:00:00Z","time_zone":"UTC"},`+
		`"organizer":{"email":"bench@bench.example","display_name":"Bench"},"visibility":"default","transparency":"opaque","event_type":"default"}`,
		EventKey(i), w.CalendarOf(i), sent.UTC().Format(time.RFC3339Nano), benchTitle(ver, sent), day, day)
}

// Poster sends webhooks to one base URL, or spreads them over several
// replicas' (see [NewSpreadPoster]).
type Poster struct {
	Base   string
	Client *http.Client
	svix   *svix.Webhook
	// msgSeq is shared by the per-connection views of a spread Poster, so
	// Svix message ids stay unique across replicas.
	msgSeq *atomic.Int64
	runID  string
	// bases are the replicas a spread Poster sends to.
	bases []string
	// raw is the load connection of a Poster returned by forConn; the
	// others send through Client.
	raw *rawConn
}

// NewPoster returns a Poster keeping up to conns connections open.
func NewPoster(base string, conns int) *Poster {
	return NewSpreadPoster([]string{base}, conns)
}

// NewSpreadPoster returns a Poster whose load connections are spread over
// bases round-robin, as a load balancer in front of replicas would: load
// connection i always sends to bases[i%len(bases)], so a webhook retried
// after an error goes back to the same replica. It keeps up to conns
// connections open in all.
func NewSpreadPoster(bases []string, conns int) *Poster {
	wh, err := svix.NewWebhook(recallSecret)
	if err != nil {
		panic(err)
	}
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &Poster{Base: bases[0], Client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, svix: wh,
		msgSeq: new(atomic.Int64), runID: strconv.FormatInt(time.Now().UnixNano(), 36), bases: bases}
}

// forConn returns the Poster load connection i sends through: a
// connection of its own, for one caller at a time. Close it when done.
func (p *Poster) forConn(i int) *Poster {
	v := *p
	v.Base = p.bases[i%len(p.bases)]
	raw, err := newRawConn(v.Base, p.Client.Timeout)
	if err != nil {
		panic(err) // the bases are the bench's own http:// addresses
	}
	v.raw = raw
	return &v
}

// Close closes the Poster's own load connection, if it has one.
func (p *Poster) Close() {
	if p.raw != nil {
		p.raw.close()
	}
}

// Postpress sends a postpress webhook with its header authentication and,
// like postpress's API-created webhooks, no Content-Type.
func (p *Poster) Postpress(ctx context.Context, body []byte) (int, error) {
	if p.raw != nil {
		return p.raw.post(ctx, "/v1/webhooks/postpress", []header{{postpressHeader, postpressSecret}}, body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Base+"/v1/webhooks/postpress", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set(postpressHeader, postpressSecret)
	return p.do(req)
}

// RecallHint sends a Svix-signed calendar.sync_events hint for a Recall
// calendar, with a message id never used before.
func (p *Poster) RecallHint(ctx context.Context, calendarID string) (int, error) {
	now := time.Now()
	body := fmt.Appendf(nil, `{"event":"calendar.sync_events","data":{"calendar_id":%q,"last_updated_ts":%q}}`, calendarID, now.UTC().Format(time.RFC3339))
	id := "msg_bench_" + p.runID + "_" + strconv.FormatInt(p.msgSeq.Add(1), 10)
	sig, err := p.svix.Sign(id, now, body)
	if err != nil {
		return 0, err
	}
	if p.raw != nil {
		return p.raw.post(ctx, "/v1/webhooks/recall", []header{{"Content-Type", "application/json"},
			{"svix-id", id}, {"svix-timestamp", strconv.FormatInt(now.Unix(), 10)}, {"svix-signature", sig}}, body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Base+"/v1/webhooks/recall", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("svix-signature", sig)
	return p.do(req)
}

func (p *Poster) do(req *http.Request) (int, error) {
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// LoadSpec says how hard and how long to send.
type LoadSpec struct {
	Conns    int
	Duration time.Duration
	// Rate is webhooks per second across all connections; 0 is closed
	// loop: every connection sends its next webhook as soon as the last
	// one is answered.
	Rate float64
	// MaxSends stops after this many webhooks in all (0: no limit).
	MaxSends int64
	// OnePass sends the next version of every event exactly once, then
	// stops: a warm-up that leaves every event at the same version.
	OnePass bool
	// ResendOnly, with OnePass, sends only the bodies still waiting for a
	// 200: what a provider retries after an outage.
	ResendOnly bool
}

// LoadResult is what the sending side measured.
type LoadResult struct {
	Sent       int64   `json:"sent"`
	OK         int64   `json:"ok"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"webhooks_per_s"`
	// Answer is the webhook's answer latency, measured from the instant it
	// was due (fixed rate) or sent (closed loop), so a stalled server is not
	// hidden by a sender that stalled with it.
	Answer Summary `json:"answer"`
}

// Run sends the workload through p until spec is exhausted or ctx is done.
// A webhook not answered 200 is sent again, unchanged, before anything else
// from the same connection.
//
// When spec.Duration ends, no new webhook starts, but those in flight are
// waited for: cancelling them would drop the slowest answers from the
// figures, and a webhook calsync commits after its sender gave up would
// reach the watchers as a version the checkers were never told about.
func (w *Workload) Run(ctx context.Context, p *Poster, spec LoadSpec) LoadResult {
	reqCtx := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if spec.Duration > 0 {
		ctx, cancel = context.WithTimeout(ctx, spec.Duration)
		defer cancel()
	}
	var tokens chan time.Time
	if spec.Rate > 0 {
		tokens = make(chan time.Time, 1<<16)
		go pace(ctx, spec.Rate, tokens)
	}
	var sent, ok, errs atomic.Int64
	lat := &Latencies{}
	var wg sync.WaitGroup
	start := time.Now()
	for wkr := range spec.Conns {
		p := p.forConn(wkr)
		wg.Go(func() {
			defer p.Close()
			var local []time.Duration
			defer func() { lat.Merge(local) }()
			var owned []int
			for i := wkr; i < w.Events(); i += spec.Conns {
				owned = append(owned, i)
			}
			next, n := 0, 0
			for ctx.Err() == nil {
				due := time.Now()
				if tokens != nil {
					select {
					case due = <-tokens:
					case <-ctx.Done():
						return
					}
				}
				if spec.MaxSends > 0 && sent.Add(1) > spec.MaxSends {
					return
				} else if spec.MaxSends == 0 {
					sent.Add(1)
				}
				n++
				var status int
				var err error
				if spec.OnePass && len(owned) == 0 {
					return
				}
				if !spec.OnePass && w.RecallEvery > 0 && len(w.RecallCalendars) > 0 && n%w.RecallEvery == 0 {
					status, err = p.RecallHint(reqCtx, w.RecallCalendars[(wkr+n)%len(w.RecallCalendars)])
				} else if len(owned) > 0 {
					i := owned[next]
					body := w.pending[i]
					if body == nil && spec.ResendOnly {
						next = (next + 1) % len(owned)
						if next == 0 {
							return
						}
						continue
					}
					if body == nil {
						body = w.postpressBody(i, w.versions[i]+1, due)
						w.pending[i] = body
					}
					status, err = p.Postpress(reqCtx, body)
					if err == nil && status == http.StatusOK {
						w.versions[i]++
						w.pending[i] = nil
						next = (next + 1) % len(owned)
						if spec.OnePass && next == 0 {
							ok.Add(1)
							return
						}
					}
				}
				if err == nil && status == http.StatusOK {
					ok.Add(1)
					local = append(local, time.Since(due))
				} else if ctx.Err() == nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	n := sent.Load()
	if spec.MaxSends > 0 {
		n = min(n, spec.MaxSends)
	}
	return LoadResult{Sent: n, OK: ok.Load(), Errors: errs.Load(),
		Seconds: el.Seconds(), Throughput: float64(ok.Load()) / el.Seconds(), Answer: lat.Summary()}
}

// pace emits, at rate per second, the instant each webhook is due.
func pace(ctx context.Context, rate float64, out chan<- time.Time) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := int64(0); ; {
		now := time.Now()
		for due := start.Add(time.Duration(i) * interval); !due.After(now); due = start.Add(time.Duration(i) * interval) {
			select {
			case out <- due:
			case <-ctx.Done():
				return
			}
			i++
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}
