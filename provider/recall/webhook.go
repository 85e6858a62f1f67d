package recall

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/calsync/calsync/model"
)

// Webhook event names calsync acts on.
const (
	EventCalendarUpdate     = "calendar.update"
	EventCalendarSyncEvents = "calendar.sync_events"
)

var (
	// ErrMalformed is returned (wrapping the cause) for a payload or an
	// event that can never be processed; retrying cannot help, so the
	// caller dead-letters it.
	ErrMalformed = errors.New("recall: malformed")
	// ErrIgnored is returned (wrapping the event name) for a webhook that
	// arrives on the endpoint but is not a calendar webhook: bot events,
	// Svix pings and the like.
	ErrIgnored = errors.New("recall: webhook ignored")
)

// Webhook is a Recall Calendar V2 webhook: a hint to re-fetch a calendar
// (calendar.update) or its events (calendar.sync_events).
type Webhook struct {
	// Event is the webhook's event name.
	Event string
	// CalendarID is Recall's id of the calendar.
	CalendarID string
	// LastUpdatedTS is the sync_events watermark Recall suggests for
	// updated_at__gte; zero when absent.
	LastUpdatedTS time.Time
}

// Parse decodes a Recall webhook body. Non-calendar events (bot.*, Svix
// pings with "event_type") return an error wrapping [ErrIgnored]; invalid
// JSON, a missing calendar_id or a bad timestamp one wrapping
// [ErrMalformed].
func Parse(body []byte) (*Webhook, error) {
	var p struct {
		Event     *string         `json:"event"`
		EventType *string         `json:"event_type"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	switch {
	case p.Event == nil && p.EventType != nil:
		return nil, fmt.Errorf("%w: event_type %q", ErrIgnored, *p.EventType)
	case p.Event == nil || *p.Event == "":
		return nil, fmt.Errorf("%w: missing event", ErrMalformed)
	case *p.Event != EventCalendarUpdate && *p.Event != EventCalendarSyncEvents:
		return nil, fmt.Errorf("%w: event %q", ErrIgnored, *p.Event)
	}
	var d struct {
		CalendarID    string `json:"calendar_id"`
		LastUpdatedTS string `json:"last_updated_ts"`
	}
	if len(p.Data) == 0 || bytes.Equal(p.Data, []byte("null")) {
		return nil, fmt.Errorf("%w: missing data", ErrMalformed)
	}
	if err := json.Unmarshal(p.Data, &d); err != nil {
		return nil, fmt.Errorf("%w: data: %w", ErrMalformed, err)
	}
	if d.CalendarID == "" {
		return nil, fmt.Errorf("%w: missing data.calendar_id", ErrMalformed)
	}
	w := &Webhook{Event: *p.Event, CalendarID: d.CalendarID}
	if d.LastUpdatedTS != "" {
		t, err := parseISOTime(d.LastUpdatedTS)
		if err != nil {
			return nil, fmt.Errorf("%w: data.last_updated_ts: %w", ErrMalformed, err)
		}
		w.LastUpdatedTS = t
	}
	return w, nil
}

// CalsyncCalendarID returns calsync's id of the webhook's calendar, the
// key under which work for one calendar is ordered and coalesced.
func (w *Webhook) CalsyncCalendarID() string {
	return model.CalendarID(model.ProviderRecall, "", w.CalendarID)
}

// parseISOTime parses an ISO 8601 timestamp as Recall writes them: RFC
// 3339, or without an offset meaning UTC.
func parseISOTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("bad timestamp %q", s)
}
