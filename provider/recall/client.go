package recall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/encoding/json"
	"golang.org/x/time/rate"
)

// Endpoint names, used for rate limits ([WithRateLimit]), metrics
// ([WithObserver]) and [APIError].
const (
	EndpointCalendarRetrieve = "calendar_retrieve"
	EndpointEventList        = "calendar_event_list"
	EndpointEventRetrieve    = "calendar_event_retrieve"
)

// ErrNotFound is returned (together with the [*APIError]) when Recall
// answers 404 for a calendar or an event.
var ErrNotFound = errors.New("recall: not found")

// maxBody bounds a response body; a page of 100 events is far smaller.
const maxBody = 64 << 20

// APIError is an error answer from Recall's API.
type APIError struct {
	Endpoint   string
	StatusCode int
	// RetryAfter is the wait Recall asked for (429), zero otherwise.
	RetryAfter time.Duration
	// Message is the start of Recall's error body.
	Message string
}

// Error describes the answer without any request secret.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("recall: %s: HTTP %d", e.Endpoint, e.StatusCode)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// temporary reports whether the same request may succeed later.
func (e *APIError) temporary() bool {
	switch c := e.StatusCode; {
	case c == http.StatusTooManyRequests, c == http.StatusConflict, c == http.StatusRequestTimeout:
		return true
	case c >= 500:
		return true
	}
	return false
}

// permanentError marks failures no retry can fix (a refused next URL, a
// response of the wrong shape).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err can never succeed by retrying: a 4xx
// answer other than 408, 409 and 429 (bad key, not found, bad request), a
// malformed response, or a refused next URL. Network errors, 5xx, 429 and
// context errors are not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return !ae.temporary()
	}
	var pe *permanentError
	return errors.As(err, &pe) || errors.Is(err, ErrMalformed)
}

// Client calls Recall's Calendar V2 REST API with per-endpoint rate limits
// and retries. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	apiKey   string
	hc       *http.Client
	limiters map[string]*rate.Limiter
	limits   map[string]limit
	// lists merges the event listings that wait together (merge.go).
	lists listMerger
	// shared, if set, is where the rate limits are counted, by every
	// process using the same API key (see WithSharedRateLimiter).
	shared SharedLimiter
	// keyHash names the API key in shared bucket names without revealing
	// it.
	keyHash string

	initialInterval time.Duration
	maxInterval     time.Duration
	maxElapsed      time.Duration
	insufficient    time.Duration // wait after 507

	now      func() time.Time
	sleep    func(ctx context.Context, d time.Duration) error
	logger   *slog.Logger
	observer func(endpoint string, status int, d time.Duration)
}

type limit struct {
	every time.Duration
	burst int
}

// ClientOption configures a [Client].
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client (default: one with a 30 s timeout).
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *Client) { c.hc = hc }
}

// WithRateLimit sets the rate of an endpoint to perMinute requests a
// minute with the given burst, counted over any 60-second window. Recall's limits are per workspace, so a
// deployment sharing a key with others should configure less than the
// defaults (calendar 300/min, event list 60/min, event 300/min). A
// perMinute of 0 or less removes the endpoint's limit.
func WithRateLimit(endpoint string, perMinute, burst int) ClientOption {
	return func(c *Client) {
		if perMinute <= 0 {
			c.limits[endpoint] = limit{}
			return
		}
		// A token bucket lets through its burst plus a minute of refill in
		// any one minute, so the refill is what is left of perMinute after
		// the burst: no 60-second window ever exceeds perMinute.
		b := max(burst, 1)
		if b >= perMinute {
			b = max(perMinute/2, 1)
		}
		c.limits[endpoint] = limit{every: time.Minute / time.Duration(max(perMinute-b, 1)), burst: b}
	}
}

// SharedLimiter is a token bucket shared by several processes
// (store.RateLimiter implements it): TakeToken takes one token from the
// bucket name, which holds at most burst tokens and gains one every
// interval, and returns 0, or takes nothing and returns how long until a
// token will be there.
type SharedLimiter interface {
	TakeToken(ctx context.Context, name string, interval time.Duration, burst int) (time.Duration, error)
}

// WithSharedRateLimiter counts the per-endpoint rate limits in l rather
// than in this process, so that every process calling Recall with the
// same API key together stays within them: Recall counts its limits per
// workspace. Buckets are named by endpoint and a hash of the API key,
// never the key itself. When l fails (its database is unreachable), a
// request waits on this process's own limiter instead.
func WithSharedRateLimiter(l SharedLimiter) ClientOption {
	return func(c *Client) { c.shared = l }
}

// WithBackoff sets the exponential backoff between retries: the first
// interval, the longest one, and the total time after which a request
// gives up (0 retries until ctx ends).
func WithBackoff(initial, maxInterval, maxElapsed time.Duration) ClientOption {
	return func(c *Client) {
		c.initialInterval, c.maxInterval, c.maxElapsed = initial, maxInterval, maxElapsed
	}
}

// WithClock sets the clock and the sleep function used for rate limits,
// retries and Retry-After, so tests run without real waits. sleep must
// return ctx's error when ctx ends first.
func WithClock(now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) ClientOption {
	return func(c *Client) { c.now, c.sleep = now, sleep }
}

// WithLogger sets the logger for retries (default: discard). Nothing the
// client logs carries a secret.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *Client) { c.logger = l }
}

// WithObserver registers a function called after every HTTP attempt with
// the endpoint, the status code (0 for a network error) and the duration,
// for metrics.
func WithObserver(fn func(endpoint string, status int, d time.Duration)) ClientOption {
	return func(c *Client) { c.observer = fn }
}

// NewClient returns a client for the Recall region at baseURL (for
// example "https://us-east-1.recall.ai") authenticating with apiKey.
func NewClient(baseURL, apiKey string, opts ...ClientOption) *Client {
	base, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || base.Host == "" {
		// An unusable base URL fails every request with a permanent error.
		base = &url.URL{}
	}
	c := &Client{
		base:            base,
		apiKey:          apiKey,
		hc:              &http.Client{Timeout: 30 * time.Second},
		limits:          map[string]limit{},
		initialInterval: 500 * time.Millisecond,
		maxInterval:     time.Minute,
		maxElapsed:      10 * time.Minute,
		insufficient:    30 * time.Second,
		now:             time.Now,
		sleep:           sleepCtx,
		logger:          slog.New(slog.DiscardHandler),
		lists:           listMerger{horizon: DefaultListMergeHorizon},
	}
	WithRateLimit(EndpointCalendarRetrieve, 300, 10)(c)
	WithRateLimit(EndpointEventList, 60, 5)(c)
	WithRateLimit(EndpointEventRetrieve, 300, 10)(c)
	for _, o := range opts {
		o(c)
	}
	sum := sha256.Sum256([]byte(apiKey))
	c.keyHash = hex.EncodeToString(sum[:8])
	c.limiters = map[string]*rate.Limiter{}
	for ep, l := range c.limits {
		if l.every > 0 {
			c.limiters[ep] = rate.NewLimiter(rate.Every(l.every), l.burst)
		}
	}
	return c
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// GetCalendar fetches a calendar. A 404 returns an error wrapping
// [ErrNotFound]; see [IsPermanent] for the other failures.
func (c *Client) GetCalendar(ctx context.Context, id string) (*Calendar, error) {
	if id == "" {
		return nil, &permanentError{errors.New("recall: empty calendar id")}
	}
	u := c.endpointURL("/api/v2/calendars/"+url.PathEscape(id)+"/", nil)
	var cal Calendar
	if err := c.get(ctx, EndpointCalendarRetrieve, u, &cal); err != nil {
		return nil, err
	}
	return &cal, nil
}

// GetEvent fetches one calendar event. A 404 returns an error wrapping
// [ErrNotFound].
func (c *Client) GetEvent(ctx context.Context, id string) (*Event, error) {
	if id == "" {
		return nil, &permanentError{errors.New("recall: empty event id")}
	}
	u := c.endpointURL("/api/v2/calendar-events/"+url.PathEscape(id)+"/", nil)
	var ev Event
	if err := c.get(ctx, EndpointEventRetrieve, u, &ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// ListOption configures one [Client.ListEvents] call.
type ListOption func(*listOptions)

type listOptions struct {
	beforeFirst func()
}

// BeforeFirstRequest has ListEvents call fn once the rate limiter has let
// the first page's request through, right before each attempt at sending
// it (so again before a retry). Whatever changed at Recall before fn
// returns is in the listing: a caller can, in fn, take on more work that
// the listing answers.
func BeforeFirstRequest(fn func()) ListOption {
	return func(o *listOptions) { o.beforeFirst = fn }
}

// ListEvents lists a calendar's events updated at or after updatedAtGTE
// (all events when it is zero), calling fn with each page in order. It
// follows Recall's next URLs exactly as given, refusing one that leaves
// the base URL's host. A page is retried on its own; an error from fn
// stops the listing and is returned as is.
//
// Incremental listings of several calendars that wait for the rate limit
// together may be sent as one listing of the workspace (see
// [WithListMerging]): fn then gets the events of calendarID only, from
// pages that may hold none of them (those are not passed on), and fn and
// the [BeforeFirstRequest] function may run on the goroutine of another
// ListEvents call while this one waits for it. An error from fn stops
// only this call's share of the listing.
func (c *Client) ListEvents(ctx context.Context, calendarID string, updatedAtGTE time.Time, fn func([]Event) error, opts ...ListOption) error {
	if calendarID == "" {
		return &permanentError{errors.New("recall: empty calendar id")}
	}
	var o listOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.listMerged(&listing{ctx: ctx, calendarID: calendarID, since: updatedAtGTE, fn: fn,
		before: o.beforeFirst, done: make(chan error, 1)})
}

// pages lists events from the URL first returns (called once the rate
// limiter lets each attempt at the first page through), following the
// next URLs, and calls fn with each page in order.
func (c *Client) pages(ctx context.Context, first func() string, fn func([]Event) error) error {
	seen := map[string]bool{}
	target := func() string {
		u := first()
		seen[u] = true
		return u
	}
	for target != nil {
		var page struct {
			Next    *string `json:"next"`
			Results []Event `json:"results"`
		}
		if err := c.getThen(ctx, EndpointEventList, target, &page); err != nil {
			return err
		}
		if err := fn(page.Results); err != nil {
			return err
		}
		target = nil
		if page.Next != nil && *page.Next != "" {
			next, err := c.checkNext(*page.Next)
			if err != nil {
				return err
			}
			if seen[next] {
				return &permanentError{fmt.Errorf("recall: %s: next URL repeats a page", EndpointEventList)}
			}
			seen[next] = true
			target = func() string { return next }
		}
	}
	return nil
}

// checkNext accepts a next URL only on the base URL's host, so a bad or
// hostile answer cannot send the API key elsewhere.
func (c *Client) checkNext(next string) (string, error) {
	u, err := url.Parse(next)
	if err != nil {
		return "", &permanentError{fmt.Errorf("recall: bad next URL: %w", err)}
	}
	if !u.IsAbs() || !strings.EqualFold(u.Host, c.base.Host) || u.User != nil ||
		(u.Scheme != c.base.Scheme && !(c.base.Scheme == "http" && u.Scheme == "https")) {
		return "", &permanentError{fmt.Errorf("recall: refusing next URL on %s://%s (base %s://%s)", u.Scheme, u.Host, c.base.Scheme, c.base.Host)}
	}
	return next, nil
}

func (c *Client) endpointURL(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	if q != nil {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// get performs a GET with rate limiting and retries, decoding the JSON
// answer into out.
func (c *Client) get(ctx context.Context, endpoint, u string, out any) error {
	return c.getThen(ctx, endpoint, func() string { return u }, out)
}

// getThen is get asking target for the URL right before each attempt is
// sent, once the rate limiter has let it through.
func (c *Client) getThen(ctx context.Context, endpoint string, target func() string, out any) error {
	if c.base.Host == "" {
		return &permanentError{errors.New("recall: client has no valid base URL")}
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     c.initialInterval,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          backoff.DefaultMultiplier,
		MaxInterval:         c.maxInterval,
	}
	b.Reset()
	start := c.now()
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, endpoint, target, out)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if IsPermanent(err) {
			return err
		}
		wait := b.NextBackOff()
		var ae *APIError
		if errors.As(err, &ae) {
			switch {
			case ae.StatusCode == http.StatusTooManyRequests && ae.RetryAfter > wait:
				wait = ae.RetryAfter
			case ae.StatusCode == http.StatusInsufficientStorage && c.insufficient > wait:
				wait = c.insufficient
			}
		}
		if c.maxElapsed > 0 && c.now().Sub(start)+wait > c.maxElapsed {
			return fmt.Errorf("recall: giving up after %d attempts: %w", attempt, err)
		}
		c.logger.LogAttrs(ctx, slog.LevelWarn, "recall request failed, retrying",
			slog.String("endpoint", endpoint), slog.Int("attempt", attempt),
			slog.Duration("wait", wait), slog.String("error", err.Error()))
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// attempt performs one rate-limited request to the URL target returns
// once the limiter lets it through.
func (c *Client) attempt(ctx context.Context, endpoint string, target func() string, out any) error {
	if err := c.wait(ctx, endpoint); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target(), nil)
	if err != nil {
		return &permanentError{fmt.Errorf("recall: %s: %w", endpoint, err)}
	}
	req.Header.Set("Authorization", "Token "+c.apiKey)
	req.Header.Set("Accept", "application/json")
	began := c.now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observe(endpoint, 0, began)
		return fmt.Errorf("recall: %s: %w", endpoint, redactURLError(err))
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	c.observe(endpoint, resp.StatusCode, began)
	if resp.StatusCode != http.StatusOK {
		ae := &APIError{Endpoint: endpoint, StatusCode: resp.StatusCode, Message: errorMessage(body)}
		if resp.StatusCode == http.StatusTooManyRequests {
			ae.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), c.now())
		}
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %w", ErrNotFound, ae)
		}
		return ae
	}
	if readErr != nil {
		return fmt.Errorf("recall: %s: reading body: %w", endpoint, readErr)
	}
	if err := json.Unmarshal(body, out); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// Invalid JSON from a 200 is a cut connection or a proxy's
			// page: retry.
			return fmt.Errorf("recall: %s: invalid JSON: %w", endpoint, err)
		}
		return fmt.Errorf("%w: %s: %w", ErrMalformed, endpoint, err)
	}
	return nil
}

// wait blocks until the endpoint's rate limiter allows a request: the
// shared one if set, this process's own otherwise.
func (c *Client) wait(ctx context.Context, endpoint string) error {
	lim := c.limiters[endpoint]
	if lim == nil {
		return nil
	}
	if c.shared != nil {
		err := c.waitShared(ctx, endpoint)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// The shared bucket cannot be reached: waiting on this process's
		// own limiter keeps each process within the limit, so Recall sees
		// at most the limit times the processes for as long as it lasts,
		// rather than either no limit or no requests at all.
		c.logger.Warn("recall: shared rate limit unavailable; using this process's", "endpoint", endpoint, "err", err)
	}
	now := c.now()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return &permanentError{fmt.Errorf("recall: %s: rate limit burst is zero", endpoint)}
	}
	if d := r.DelayFrom(now); d > 0 {
		if err := c.sleep(ctx, d); err != nil {
			r.CancelAt(c.now())
			return err
		}
	}
	return nil
}

// waitShared blocks until the endpoint's shared bucket gives a token.
func (c *Client) waitShared(ctx context.Context, endpoint string) error {
	l := c.limits[endpoint]
	name := "recall:" + endpoint + ":" + c.keyHash
	for {
		d, err := c.shared.TakeToken(ctx, name, l.every, l.burst)
		if err != nil {
			return err
		}
		if d <= 0 {
			return nil
		}
		if err := c.sleep(ctx, d); err != nil {
			return err
		}
	}
}

func (c *Client) observe(endpoint string, status int, began time.Time) {
	if c.observer != nil {
		c.observer(endpoint, status, c.now().Sub(began))
	}
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// errorMessage extracts Recall's error text ({"detail": ...}) or the
// start of the body.
func errorMessage(body []byte) string {
	var d struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &d) == nil && d.Detail != "" {
		return truncate(d.Detail, 200)
	}
	return truncate(strings.TrimSpace(string(body)), 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// redactURLError drops the URL from a *url.Error: it adds nothing the
// endpoint name does not say, and query strings should not reach logs.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
