package recall

import (
	"time"

	"github.com/segmentio/encoding/json"
)

// Calendar platforms Recall reports.
const (
	PlatformGoogle    = "google_calendar"
	PlatformMicrosoft = "microsoft_outlook"
)

// Calendar is a Recall calendar without its OAuth fields: those are
// secrets, so they are never decoded, stored or logged.
type Calendar struct {
	ID       string `json:"id"`
	Platform string `json:"platform"`
	// PlatformEmail is empty (null at Recall) right after creation.
	PlatformEmail string          `json:"platform_email"`
	Status        string          `json:"status"`
	StatusChanges []StatusChange  `json:"status_changes"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	Metadata      json.RawMessage `json:"metadata"`
}

// StatusChange is one transition of a calendar's status. Recall adds
// details to disconnects; they are kept in Details.
type StatusChange struct {
	Status    string
	CreatedAt time.Time
	// Details holds every other field of the status change.
	Details map[string]any
}

// UnmarshalJSON decodes a status change and keeps its extra fields.
func (s *StatusChange) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*s = StatusChange{}
	if v, ok := m["status"].(string); ok {
		s.Status = v
	}
	if v, ok := m["created_at"].(string); ok && v != "" {
		t, err := parseISOTime(v)
		if err != nil {
			return err
		}
		s.CreatedAt = t
	}
	delete(m, "status")
	delete(m, "created_at")
	if len(m) > 0 {
		s.Details = m
	}
	return nil
}

// Event is a Recall calendar event. Raw is the platform's own event
// (a Google Calendar v3 event or a Microsoft Graph event). Times are nil
// when absent (or null): every instant is a valid time, the earliest one
// (Go's zero time) included.
type Event struct {
	ID              string     `json:"id"`
	CalendarID      string     `json:"calendar_id"`
	StartTime       *time.Time `json:"start_time"`
	EndTime         *time.Time `json:"end_time"`
	Platform        string     `json:"platform"`
	PlatformID      string     `json:"platform_id"`
	ICalUID         string     `json:"ical_uid"`
	MeetingPlatform string     `json:"meeting_platform"`
	MeetingURL      string     `json:"meeting_url"`
	CreatedAt       *time.Time `json:"created_at"`
	UpdatedAt       *time.Time `json:"updated_at"`
	IsDeleted       bool       `json:"is_deleted"`
	// Bots are the bots scheduled for the event, left undecoded.
	Bots json.RawMessage `json:"bots"`
	Raw  json.RawMessage `json:"raw"`
	// Document is the whole event as Recall sent it; it becomes the
	// normalized event's raw payload. It is set when the event is decoded.
	Document json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes an event and keeps the whole document.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = Event(p)
	e.Document = append(json.RawMessage(nil), b...)
	return nil
}
