// Package recalltest is a fake Recall.ai Calendar V2 API for tests: an
// in-memory set of calendars and events behind an httptest.Server that
// answers as Recall documents it (token auth, updated_at__gte filters,
// pages of at most 100 results linked by full next URLs), counts requests
// per endpoint, and injects faults (429 with Retry-After, 5xx bursts, slow
// and truncated answers).
package recalltest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Endpoint names, as counted by [Server.Requests]; they match the recall
// client's endpoint names.
const (
	EndpointCalendarRetrieve = "calendar_retrieve"
	EndpointEventList        = "calendar_event_list"
	EndpointEventRetrieve    = "calendar_event_retrieve"
)

// MaxPageSize is the most results Recall returns in one page.
const MaxPageSize = 100

// Calendar is a calendar held by the fake. The OAuth fields are served like
// Recall serves them, so tests can check that clients never keep them.
type Calendar struct {
	ID                string
	Platform          string // "google_calendar" or "microsoft_outlook"
	PlatformEmail     string // empty is served as null
	Status            string // "connecting", "connected", "disconnected"
	StatusChanges     []map[string]any
	Metadata          map[string]any
	CreatedAt         time.Time
	UpdatedAt         time.Time
	OAuthClientID     string
	OAuthClientSecret string
	OAuthRefreshToken string
}

// Event is a calendar event held by the fake. Raw is the platform's event;
// [GoogleEvent] and [MicrosoftEvent] build one.
type Event struct {
	ID              string
	CalendarID      string
	StartTime       time.Time
	EndTime         time.Time
	Platform        string
	PlatformID      string
	ICalUID         string
	MeetingPlatform string
	MeetingURL      string // empty is served as null
	CreatedAt       time.Time
	UpdatedAt       time.Time
	IsDeleted       bool
	Bots            []any
	Raw             map[string]any
}

// Fault is an injected failure for the next Count matching requests.
type Fault struct {
	// Endpoint limits the fault to one endpoint; empty matches all.
	Endpoint string
	// Count is how many requests the fault applies to.
	Count int
	// Status is the answer's status code (0 keeps the normal answer).
	Status int
	// RetryAfter is sent as Retry-After (in whole seconds) when set.
	RetryAfter time.Duration
	// Delay holds the answer back (or until the client gives up).
	Delay time.Duration
	// Block, if set, holds the answer back until it is closed (or the
	// client gives up): a test decides when a stalled Recall answers.
	Block <-chan struct{}
	// Truncate cuts the normal answer's body in half, as a dropped
	// connection would.
	Truncate bool
}

// Request is one request the fake received.
type Request struct {
	Endpoint string
	URL      string
	Status   int
}

// Server is the fake Recall API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL to give the client, like "https://us-east-1.recall.ai".
	URL string

	srv      *httptest.Server
	apiKey   string
	pageSize int

	mu sync.Mutex
	// inFlight counts the requests being answered, by endpoint.
	inFlight  map[string]int
	now       time.Time // zero: real time
	calendars map[string]*Calendar
	events    map[string]*Event
	faults    []*Fault
	log       []Request
	nextBase  string
	listener  net.Listener
}

// Option configures a [Server].
type Option func(*Server)

// WithAPIKey sets the API key the fake accepts (default "test-key").
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKey = key } }

// WithPageSize sets the page size of event lists (default and maximum
// [MaxPageSize]).
func WithPageSize(n int) Option {
	return func(s *Server) { s.pageSize = min(max(n, 1), MaxPageSize) }
}

// WithNow freezes the fake's clock, which stamps created_at and updated_at,
// at t; see [Server.Advance].
func WithNow(t time.Time) Option { return func(s *Server) { s.now = t.UTC() } }

// New starts a fake Recall API that is closed when the test ends.
func New(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := NewServer(opts...)
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a fake Recall API; the caller must Close it. Prefer
// [New] in tests.
func NewServer(opts ...Option) *Server {
	s := &Server{
		apiKey:    "test-key",
		pageSize:  MaxPageSize,
		calendars: map[string]*Calendar{},
		events:    map[string]*Event{},
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	if s.listener != nil {
		s.srv.Listener.Close()
		s.srv.Listener = s.listener
	}
	s.srv.Start()
	s.URL = s.srv.URL
	return s
}

// WithListener serves the fake on l instead of a free loopback port, so a
// development setup can give it a fixed address.
func WithListener(l net.Listener) Option { return func(s *Server) { s.listener = l } }

// Close shuts the fake down.
func (s *Server) Close() { s.srv.Close() }

// APIKey returns the key the fake accepts.
func (s *Server) APIKey() string { return s.apiKey }

// Client returns an HTTP client for the fake.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Now returns the fake's current time.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

func (s *Server) nowLocked() time.Time {
	if s.now.IsZero() {
		return time.Now().UTC().Truncate(time.Microsecond)
	}
	return s.now
}

// SetNow freezes the fake's clock at t.
func (s *Server) SetNow(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = t.UTC()
}

// Advance moves the fake's clock forward by d, freezing it first if it
// was following real time.
func (s *Server) Advance(d time.Duration) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = s.nowLocked().Add(d)
	return s.now
}

// NewID returns a random uuid like Recall's ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// PutCalendar adds or replaces a calendar, filling in an id, platform,
// status and times when missing, and returns what is stored.
func (s *Server) PutCalendar(c Calendar) Calendar {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.Platform == "" {
		c.Platform = "google_calendar"
	}
	if c.Status == "" {
		c.Status = "connected"
	}
	if c.CreatedAt.IsZero() {
		if old, ok := s.calendars[c.ID]; ok {
			c.CreatedAt = old.CreatedAt
		} else {
			c.CreatedAt = now
		}
	}
	c.UpdatedAt = now
	if c.StatusChanges == nil {
		c.StatusChanges = []map[string]any{{"status": c.Status, "created_at": now.Format(time.RFC3339Nano)}}
	}
	cp := c
	s.calendars[c.ID] = &cp
	return cp
}

// SetCalendarStatus changes a calendar's status, recording a status change
// with details (for example a disconnect's reason).
func (s *Server) SetCalendarStatus(id, status string, details map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.calendars[id]
	if !ok {
		panic("recalltest: no calendar " + id)
	}
	now := s.nowLocked()
	ch := map[string]any{"status": status, "created_at": now.Format(time.RFC3339Nano)}
	for k, v := range details {
		ch[k] = v
	}
	c.Status, c.UpdatedAt = status, now
	c.StatusChanges = append(c.StatusChanges, ch)
}

// DeleteCalendar removes a calendar, as Recall's Delete Calendar does.
func (s *Server) DeleteCalendar(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calendars, id)
}

// PutEvent adds or replaces an event, filling in an id, the platform's
// ids and the times, and stamping updated_at with the fake's clock. It
// returns what is stored.
func (s *Server) PutEvent(e Event) Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	if e.ID == "" {
		e.ID = NewID()
	}
	if old, ok := s.events[e.ID]; ok && e.CreatedAt.IsZero() {
		e.CreatedAt = old.CreatedAt
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now
	}
	if e.Platform == "" {
		e.Platform = "google_calendar"
		if _, ok := e.Raw["subject"]; ok {
			e.Platform = "microsoft_outlook"
		}
	}
	if id, ok := e.Raw["id"].(string); ok && e.PlatformID == "" {
		e.PlatformID = id
	}
	if e.ICalUID == "" {
		if u, ok := e.Raw["iCalUID"].(string); ok {
			e.ICalUID = u
		} else if u, ok := e.Raw["iCalUId"].(string); ok {
			e.ICalUID = u
		}
	}
	e.UpdatedAt = now
	cp := e
	s.events[e.ID] = &cp
	return cp
}

// UpdateEvent changes an event with fn and stamps its updated_at.
func (s *Server) UpdateEvent(id string, fn func(*Event)) Event {
	s.mu.Lock()
	e, ok := s.events[id]
	if !ok {
		s.mu.Unlock()
		panic("recalltest: no event " + id)
	}
	cp := *e
	// fn may change Raw in place while the handler serves the stored
	// event: give it a copy of its own.
	cp.Raw = cloneJSON(e.Raw)
	s.mu.Unlock()
	fn(&cp)
	cp.ID = id
	return s.PutEvent(cp)
}

// cloneJSON deep-copies a JSON object built of maps, slices and scalars.
func cloneJSON(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneJSONValue(v)
	}
	return out
}

func cloneJSONValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneJSON(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = cloneJSONValue(x)
		}
		return out
	case []map[string]any:
		out := make([]map[string]any, len(v))
		for i, x := range v {
			out[i] = cloneJSON(x)
		}
		return out
	}
	return v
}

// DeleteEvent marks an event deleted, as Recall does (it never removes
// events).
func (s *Server) DeleteEvent(id string) Event {
	return s.UpdateEvent(id, func(e *Event) { e.IsDeleted = true })
}

// Event returns a stored event.
func (s *Server) Event(id string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[id]
	if !ok {
		return Event{}, false
	}
	return *e, true
}

// Events returns every stored event of a calendar (all when calendarID is
// empty) in list order.
func (s *Server) Events(calendarID string) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, e := range s.sortedLocked() {
		if calendarID == "" || e.CalendarID == calendarID {
			out = append(out, *e)
		}
	}
	return out
}

// Inject queues a fault; faults apply in the order injected.
func (s *Server) Inject(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// RateLimitNext answers the next n requests with 429 and Retry-After.
func (s *Server) RateLimitNext(n int, retryAfter time.Duration) {
	s.Inject(Fault{Count: n, Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
}

// FailNext answers the next n requests with status (a 5xx burst, 507,
// 409, 401...).
func (s *Server) FailNext(n, status int) {
	s.Inject(Fault{Count: n, Status: status})
}

// TruncateNext cuts the body of the next n answers in half.
func (s *Server) TruncateNext(n int) { s.Inject(Fault{Count: n, Truncate: true}) }

// SlowNext delays the next n answers by d.
func (s *Server) SlowNext(n int, d time.Duration) { s.Inject(Fault{Count: n, Delay: d}) }

// ClearFaults drops every pending fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetNextBaseURL makes next URLs point at base instead of the fake itself,
// to test that clients refuse to follow them elsewhere. Empty restores.
func (s *Server) SetNextBaseURL(base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextBase = base
}

// Requests returns how many requests an endpoint received (all endpoints
// when endpoint is empty), failed ones included.
func (s *Server) Requests(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.log {
		if endpoint == "" || r.Endpoint == endpoint {
			n++
		}
	}
	return n
}

// InFlight returns how many requests the fake is answering now (held back
// by a Delay or Block fault, for example).
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.inFlight {
		n += c
	}
	return n
}

// InFlightOn returns how many requests to endpoint the fake is answering
// now. A test that waits for a Block fault to hold a request waits on the
// fault's endpoint: a request to another endpoint can be in flight for a
// moment without any fault.
func (s *Server) InFlightOn(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[endpoint]
}

// RequestLog returns every request received, oldest first.
func (s *Server) RequestLog() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// ResetRequests clears the request counters and log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

// sortedLocked returns the events in list order: by updated_at, then id.
func (s *Server) sortedLocked() []*Event {
	out := make([]*Event, 0, len(s.events))
	for _, e := range s.events {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Event) int {
		if c := a.UpdatedAt.Compare(b.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint, id := route(r.URL.Path)
	s.mu.Lock()
	fault := s.takeFaultLocked(endpoint)
	if s.inFlight == nil {
		s.inFlight = map[string]int{}
	}
	s.inFlight[endpoint]++
	s.mu.Unlock()
	status := s.serve(w, r, endpoint, id, fault)
	s.mu.Lock()
	s.inFlight[endpoint]--
	s.log = append(s.log, Request{Endpoint: endpoint, URL: r.URL.String(), Status: status})
	s.mu.Unlock()
}

func route(path string) (endpoint, id string) {
	switch {
	case path == "/api/v2/calendar-events/":
		return EndpointEventList, ""
	case strings.HasPrefix(path, "/api/v2/calendar-events/"):
		return EndpointEventRetrieve, strings.TrimSuffix(strings.TrimPrefix(path, "/api/v2/calendar-events/"), "/")
	case strings.HasPrefix(path, "/api/v2/calendars/"):
		return EndpointCalendarRetrieve, strings.TrimSuffix(strings.TrimPrefix(path, "/api/v2/calendars/"), "/")
	}
	return "", ""
}

func (s *Server) takeFaultLocked(endpoint string) *Fault {
	for i, f := range s.faults {
		if f.Endpoint != "" && f.Endpoint != endpoint {
			continue
		}
		taken := *f
		f.Count--
		if f.Count <= 0 {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		return &taken
	}
	return nil
}

// serve answers one request and returns the status sent.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, endpoint, id string, f *Fault) int {
	if f != nil && f.Block != nil {
		select {
		case <-f.Block:
		case <-r.Context().Done():
			return 0
		}
	}
	if f != nil && f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return 0
		}
	}
	if r.Method != http.MethodGet {
		return writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": "Method not allowed."}, false)
	}
	key := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Token "))
	if key == "" || key != s.apiKey {
		return writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Invalid token."}, false)
	}
	if f != nil && f.Status != 0 {
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
		}
		return writeJSON(w, f.Status, map[string]any{"detail": http.StatusText(f.Status)}, false)
	}
	truncate := f != nil && f.Truncate
	s.mu.Lock()
	defer s.mu.Unlock()
	switch endpoint {
	case EndpointCalendarRetrieve:
		c, ok := s.calendars[id]
		if !ok {
			return writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."}, false)
		}
		return writeJSON(w, http.StatusOK, c.json(), truncate)
	case EndpointEventRetrieve:
		e, ok := s.events[id]
		if !ok {
			return writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."}, false)
		}
		return writeJSON(w, http.StatusOK, e.json(), truncate)
	case EndpointEventList:
		page, status := s.listLocked(r)
		return writeJSON(w, status, page, truncate && status == http.StatusOK)
	}
	return writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."}, false)
}

// cursor is the opaque position in a listing: the last (updated_at, id)
// served.
type cursor struct {
	UpdatedAt time.Time `json:"u"`
	ID        string    `json:"i"`
}

func (s *Server) listLocked(r *http.Request) (any, int) {
	q := r.URL.Query()
	bad := func(msg string) (any, int) { return map[string]any{"detail": msg}, http.StatusBadRequest }
	var filters []func(*Event) bool
	if v := q.Get("calendar_id"); v != "" {
		filters = append(filters, func(e *Event) bool { return e.CalendarID == v })
	}
	for _, tf := range []struct {
		param string
		get   func(*Event) time.Time
		gte   bool
	}{
		{"updated_at__gte", func(e *Event) time.Time { return e.UpdatedAt }, true},
		{"start_time__gte", func(e *Event) time.Time { return e.StartTime }, true},
		{"start_time__lte", func(e *Event) time.Time { return e.StartTime }, false},
	} {
		v := q.Get(tf.param)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return bad(tf.param + ": enter a valid date/time.")
		}
		filters = append(filters, func(e *Event) bool {
			if tf.gte {
				return !tf.get(e).Before(t)
			}
			return !tf.get(e).After(t)
		})
	}
	if v := q.Get("is_deleted"); v != "" {
		want := v == "true" || v == "True" || v == "1"
		filters = append(filters, func(e *Event) bool { return e.IsDeleted == want })
	}
	if v := q.Get("ical_uid"); v != "" {
		filters = append(filters, func(e *Event) bool { return e.ICalUID == v })
	}
	var after *cursor
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		after = new(cursor)
		if err != nil || json.Unmarshal(b, after) != nil {
			return bad("Invalid cursor")
		}
	}
	var results []any
	var last *Event
	more := false
	for _, e := range s.sortedLocked() {
		if after != nil {
			if c := e.UpdatedAt.Compare(after.UpdatedAt); c < 0 || (c == 0 && e.ID <= after.ID) {
				continue
			}
		}
		if !all(filters, e) {
			continue
		}
		if len(results) == s.pageSize {
			more = true
			break
		}
		results = append(results, e.json())
		last = e
	}
	page := map[string]any{"next": nil, "previous": nil, "results": results}
	if results == nil {
		page["results"] = []any{}
	}
	if more {
		b, _ := json.Marshal(cursor{UpdatedAt: last.UpdatedAt, ID: last.ID})
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("cursor", base64.RawURLEncoding.EncodeToString(b))
		base := s.nextBase
		if base == "" {
			base = "http://" + r.Host
		}
		page["next"] = strings.TrimRight(base, "/") + r.URL.Path + "?" + nq.Encode()
	}
	if after != nil {
		page["previous"] = "http://" + r.Host + r.URL.Path
	}
	return page, http.StatusOK
}

func all(filters []func(*Event) bool, e *Event) bool {
	for _, f := range filters {
		if !f(e) {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any, truncate bool) int {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	if truncate {
		b = b[:len(b)/2]
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func stringOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (c *Calendar) json() map[string]any {
	changes := c.StatusChanges
	if changes == nil {
		changes = []map[string]any{}
	}
	meta := c.Metadata
	if meta == nil {
		meta = map[string]any{}
	}
	return map[string]any{
		"id":                  c.ID,
		"platform":            c.Platform,
		"platform_email":      stringOrNil(c.PlatformEmail),
		"status":              c.Status,
		"status_changes":      changes,
		"metadata":            meta,
		"created_at":          timeOrNil(c.CreatedAt),
		"updated_at":          timeOrNil(c.UpdatedAt),
		"oauth_client_id":     c.OAuthClientID,
		"oauth_client_secret": c.OAuthClientSecret,
		"oauth_refresh_token": c.OAuthRefreshToken,
	}
}

func (e *Event) json() map[string]any {
	bots := e.Bots
	if bots == nil {
		bots = []any{}
	}
	raw := e.Raw
	if raw == nil {
		raw = map[string]any{}
	}
	return map[string]any{
		"id":               e.ID,
		"calendar_id":      e.CalendarID,
		"start_time":       timeOrNil(e.StartTime),
		"end_time":         timeOrNil(e.EndTime),
		"platform":         e.Platform,
		"platform_id":      e.PlatformID,
		"ical_uid":         e.ICalUID,
		"meeting_platform": stringOrNil(e.MeetingPlatform),
		"meeting_url":      stringOrNil(e.MeetingURL),
		"created_at":       timeOrNil(e.CreatedAt),
		"updated_at":       timeOrNil(e.UpdatedAt),
		"is_deleted":       e.IsDeleted,
		"bots":             bots,
		"raw":              raw,
	}
}

// String describes the fake for test failure messages.
func (s *Server) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("recalltest.Server{%s, %d calendars, %d events}", s.URL, len(s.calendars), len(s.events))
}
