// Package recall verifies Recall.ai Calendar V2 webhooks, fetches calendars
// and events from Recall's REST API, and normalizes Recall's events (which
// carry the raw Google Calendar or Microsoft Graph event) into calsync's
// model. Recall's webhooks are only hints that something changed: the
// data always comes from the API.
package recall

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// ErrUnauthorized is returned (wrapping the reason) by [Verifier.Verify]
// for a delivery that is not signed by one of the configured secrets
// within the timestamp tolerance.
var ErrUnauthorized = errors.New("recall: unauthorized")

// DefaultTolerance is how far a delivery's timestamp may be from now, each
// way, as Svix and Standard Webhooks specify. It bounds replays.
const DefaultTolerance = 5 * time.Minute

// Verifier checks Svix / Standard Webhooks signatures. Several secrets may
// be configured so one can be rotated without downtime.
type Verifier struct {
	hooks     []*svix.Webhook
	now       func() time.Time
	tolerance time.Duration
}

// VerifierOption configures a [Verifier].
type VerifierOption func(*Verifier)

// WithVerifierClock sets the clock the timestamp tolerance is checked
// against; tests use it to verify recorded deliveries.
func WithVerifierClock(now func() time.Time) VerifierOption {
	return func(v *Verifier) { v.now = now }
}

// WithTolerance changes the timestamp tolerance from [DefaultTolerance].
func WithTolerance(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.tolerance = d }
}

// NewVerifier returns a Verifier that accepts a delivery signed with any of
// secrets, each a Svix signing secret ("whsec_" followed by base64). It
// fails on an empty list or a secret that does not decode, so a typo in
// configuration is caught at startup rather than as 401s.
func NewVerifier(secrets []string, opts ...VerifierOption) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("recall: no webhook secret configured")
	}
	v := &Verifier{now: time.Now, tolerance: DefaultTolerance}
	for i, s := range secrets {
		s = strings.TrimSpace(s)
		if !strings.HasPrefix(s, "whsec_") || len(s) == len("whsec_") {
			return nil, fmt.Errorf("recall: webhook secret %d is not of the form whsec_<base64>", i)
		}
		wh, err := svix.NewWebhook(s)
		if err != nil {
			return nil, fmt.Errorf("recall: webhook secret %d: bad base64", i)
		}
		v.hooks = append(v.hooks, wh)
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// Verify checks a delivery's signature and timestamp and returns its
// message id, which stays the same across Svix's retries and so
// identifies duplicates. Both the svix-* and the webhook-* (Standard
// Webhooks) header sets are accepted; the signature header may carry
// several space-separated "v1,<base64>" signatures. Errors wrap
// [ErrUnauthorized].
func (v *Verifier) Verify(body []byte, h http.Header) (messageID string, err error) {
	// Pick the header set the way the svix library does: svix-* when all
	// three are present, webhook-* otherwise.
	id, ts, sig := h.Get("svix-id"), h.Get("svix-timestamp"), h.Get("svix-signature")
	if id == "" || ts == "" || sig == "" {
		id, ts, sig = h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	}
	if id == "" || ts == "" || sig == "" {
		return "", fmt.Errorf("%w: missing signature headers", ErrUnauthorized)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: bad timestamp header", ErrUnauthorized)
	}
	// The tolerance is checked here rather than by the library so that
	// the clock can be injected.
	now, sent := v.now(), time.Unix(sec, 0)
	switch {
	case now.Sub(sent) > v.tolerance:
		return "", fmt.Errorf("%w: timestamp too old", ErrUnauthorized)
	case sent.Sub(now) > v.tolerance:
		return "", fmt.Errorf("%w: timestamp too new", ErrUnauthorized)
	}
	for _, wh := range v.hooks {
		if wh.VerifyIgnoringTimestamp(body, h) == nil {
			return id, nil
		}
	}
	return "", fmt.Errorf("%w: no matching signature", ErrUnauthorized)
}
