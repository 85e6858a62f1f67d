package postpress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/zone"
)

// Event names of the calendar webhooks postpress sends.
const (
	EventCreated = "calendar_event_created"
	EventUpdated = "calendar_event_updated"
	EventDeleted = "calendar_event_deleted"
)

var (
	// ErrMalformed is returned (wrapped with its cause) for a payload that
	// can never be processed: not JSON, wrong JSON types, missing
	// identifiers, unknown time zones, bad times, an end before the start.
	// Retrying it cannot help, so the caller dead-letters it.
	ErrMalformed = errors.New("postpress: malformed webhook")
	// ErrIgnored is returned (wrapped with the event name) for a webhook
	// postpress may send but calsync does not act on, such as
	// account_status webhooks or an event name it does not know.
	ErrIgnored = errors.New("postpress: webhook ignored")
)

// Webhook is a postpress calendar webhook as documented: created and
// updated webhooks carry the whole event, deleted ones only the
// identifiers. Timestamps and times are kept as sent; [Parse] validates
// them and [Normalize] converts them.
type Webhook struct {
	Event       string `json:"event"`
	WebhookName string `json:"webhook_name"`
	AccountID   string `json:"account_id"`
	// ProviderCalendarID is the payload's calendar_id: the calendar's
	// identifier at postpress, often its owner's email address.
	ProviderCalendarID string `json:"calendar_id"`
	// ID is the postpress id of the event.
	ID string `json:"id"`
	// MasterEventID is the id of the recurring master; often empty even
	// for instances of a series.
	MasterEventID         string     `json:"master_event_id"`
	Title                 string     `json:"title"`
	Body                  string     `json:"body"`
	Location              string     `json:"location"`
	IsCancelled           bool       `json:"is_cancelled"`
	IsAllDay              bool       `json:"is_all_day"`
	IsAttendeesListHidden bool       `json:"is_attendees_list_hidden"`
	Attendees             []Attendee `json:"attendees"`
	Start                 *DateTime  `json:"start"`
	End                   *DateTime  `json:"end"`
	Organizer             *Person    `json:"organizer"`
	// Recurrence holds the RRULE lines of a recurring event; postpress
	// documents a string, an array of lines is accepted too.
	Recurrence   Recurrence `json:"recurrence"`
	Visibility   string     `json:"visibility"`
	Transparency string     `json:"transparency"`
	EventType    string     `json:"event_type"`
	Color        string     `json:"color"`
	CreatedAt    string     `json:"created_at"`
	UpdatedAt    string     `json:"updated_at"`

	// rawJSON is the body as the event's raw payload, when [Parse] could
	// decode it so; [NormalizeJSON] hands it on.
	rawJSON model.RawJSON
}

// DateTime is a start or end of a postpress event: an RFC 3339 time with
// offset and the IANA zone the event was scheduled in.
type DateTime struct {
	DateTime string `json:"date_time"`
	TimeZone string `json:"time_zone"`
}

// Person is the organizer of a postpress event.
type Person struct {
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
}

// Attendee is one attendee of a postpress event. postpress does not
// document the shape, so decoding is lenient: a plain email string, or an
// object with email, display_name (or name/displayName),
// response_status (or status/responseStatus), optional, organizer and
// resource.
type Attendee struct {
	Email          string
	DisplayName    string
	ResponseStatus string
	Optional       bool
	Organizer      bool
	Resource       bool
}

// UnmarshalJSON decodes an attendee from a string or a lenient object.
func (a *Attendee) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Attendee{Email: strings.TrimSpace(s)}
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*a = Attendee{}
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("attendee: %w", err)
	}
	*a = Attendee{
		Email:          firstString(m, "email", "address"),
		DisplayName:    firstString(m, "display_name", "displayName", "name"),
		ResponseStatus: firstString(m, "response_status", "responseStatus", "status"),
		Optional:       lenientBool(m["optional"]),
		Organizer:      lenientBool(m["organizer"]),
		Resource:       lenientBool(m["resource"]),
	}
	if a.ResponseStatus == "" {
		// A Graph-like {"status": {"response": "accepted"}}.
		var st struct {
			Response string `json:"response"`
		}
		if raw, ok := m["status"]; ok && json.Unmarshal(raw, &st) == nil {
			a.ResponseStatus = st.Response
		}
	}
	if a.Email == "" {
		// A Graph-like {"emailAddress": {"address": ..., "name": ...}}.
		var ea struct {
			Address string `json:"address"`
			Name    string `json:"name"`
		}
		if raw, ok := m["emailAddress"]; ok && json.Unmarshal(raw, &ea) == nil {
			a.Email = ea.Address
			if a.DisplayName == "" {
				a.DisplayName = ea.Name
			}
		}
	}
	return nil
}

// firstString returns the first of keys whose value in m is a string.
func firstString(m map[string]json.RawMessage, keys ...string) string {
	for _, k := range keys {
		if raw, ok := m[k]; ok {
			if s, ok := jsonString(raw); ok && s != "" {
				return s
			}
		}
	}
	return ""
}

// jsonString decodes a JSON string as json.Unmarshal would. A plain one
// (no escapes, no control characters, valid UTF-8: nearly every attendee
// field) is its bytes between the quotes, so only the others pay for a
// full json.Unmarshal.
func jsonString(raw json.RawMessage) (string, bool) {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		plain := utf8.Valid(inner)
		for _, c := range inner {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
		}
		if plain {
			return string(inner), true
		}
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// lenientBool reads true, 1, and the strings "true", "1" and "yes" in any
// case as true, and anything else as false.
func lenientBool(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		s, _ := jsonString(raw)
		return truthy(s)
	}
	return truthy(string(raw))
}

func truthy(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// Recurrence is a list of RFC 5545 recurrence lines. It decodes from a
// string (lines separated by newlines) or an array of strings.
type Recurrence []string

// UnmarshalJSON decodes a recurrence string or array.
func (r *Recurrence) UnmarshalJSON(b []byte) error {
	var lines []string
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		lines = []string{s}
	default:
		if err := json.Unmarshal(b, &lines); err != nil {
			return fmt.Errorf("recurrence: %w", err)
		}
	}
	*r = recurrenceOf(lines)
	return nil
}

// recurrenceOf splits the lines of a recurrence as sent into its lines.
func recurrenceOf(lines []string) Recurrence {
	var out Recurrence
	for _, l := range lines {
		for _, part := range strings.FieldsFunc(l, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// Parse decodes and validates a postpress webhook body. It returns an
// error wrapping [ErrIgnored] for webhooks calsync does not act on and
// one wrapping [ErrMalformed] for payloads that can never be processed.
func Parse(body []byte) (*Webhook, error) {
	// Fast path: the body is read once, straight into the webhook, and
	// checked as the raw payload it becomes (see readDirect). Anything that
	// path does not take on decodes with encoding/json, and anything but a
	// calendar event webhook takes the slower path below, which tells
	// ignored webhooks from malformed ones.
	w, rawJSON, ok := readDirect(body)
	if !ok {
		w = new(Webhook)
		ok = json.Unmarshal(body, w) == nil
	}
	if ok {
		switch w.Event {
		case EventCreated, EventUpdated, EventDeleted:
			if _, err := w.validate(); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
			}
			w.rawJSON = rawJSON
			return w, nil
		}
	}
	var head map[string]json.RawMessage
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if head == nil {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	var event string
	if raw, ok := head["event"]; ok {
		if err := json.Unmarshal(raw, &event); err != nil {
			return nil, fmt.Errorf("%w: event: %w", ErrMalformed, err)
		}
	}
	switch event {
	case EventCreated, EventUpdated, EventDeleted:
	case "":
		if isAccountStatus(head) {
			return nil, fmt.Errorf("%w: account_status webhook", ErrIgnored)
		}
		return nil, fmt.Errorf("%w: missing event", ErrMalformed)
	default:
		return nil, fmt.Errorf("%w: event %q", ErrIgnored, event)
	}
	w = new(Webhook)
	if err := json.Unmarshal(body, w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := w.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	w.rawJSON = rawJSON
	return w, nil
}

// isAccountStatus recognizes an account_status webhook that carries no
// event name of its own.
func isAccountStatus(head map[string]json.RawMessage) bool {
	for _, k := range []string{"source", "type", "webhook_type"} {
		var s string
		if raw, ok := head[k]; ok && json.Unmarshal(raw, &s) == nil && s == "account_status" {
			return true
		}
	}
	_, ok := head["account_status"]
	return ok
}

// Deleted reports whether the webhook deletes its event.
func (w *Webhook) Deleted() bool { return w.Event == EventDeleted }

// CalendarID returns calsync's id of the webhook's calendar. Webhooks of
// one calendar are processed in order under this key.
func (w *Webhook) CalendarID() string {
	return model.CalendarID(model.ProviderPostpress, w.AccountID, w.ProviderCalendarID)
}

// EventID returns calsync's id of the webhook's event.
func (w *Webhook) EventID() string {
	return model.EventID(model.ProviderPostpress, model.PostpressScope(w.AccountID, w.ProviderCalendarID), w.ID)
}

// times is the validated, converted form of a webhook's time fields. The
// has* flags say whether a time was given: every instant is a valid time,
// the earliest one (Go's zero time) included.
type times struct {
	start, end           time.Time
	hasStart, hasEnd     bool
	zone                 string // IANA name, "" when the payload gives none
	loc                  *time.Location
	startDate, endDate   string
	createdAt, updatedAt time.Time
	hasCreated, hasUpd   bool
}

// validate checks the identifiers and converts the time fields. Times are
// checked against what the API can carry after every conversion, since
// turning an all-day event's instants into the starts of its dates can
// move them by a day and more.
func (w *Webhook) validate() (*times, error) {
	switch {
	case w.AccountID == "":
		return nil, errors.New("missing account_id")
	case w.ProviderCalendarID == "":
		return nil, errors.New("missing calendar_id")
	case w.ID == "":
		return nil, errors.New("missing id")
	}
	t := &times{loc: time.UTC}
	var err error
	if t.createdAt, t.hasCreated, err = parseTimestamp("created_at", w.CreatedAt); err != nil {
		return nil, err
	}
	if t.updatedAt, t.hasUpd, err = parseTimestamp("updated_at", w.UpdatedAt); err != nil {
		return nil, err
	}
	if w.Deleted() {
		return t, t.checkRange()
	}
	var startLoc, endLoc *time.Location
	if w.Start != nil {
		if t.start, startLoc, err = w.Start.parse("start"); err != nil {
			return nil, err
		}
		t.hasStart = true
		t.zone = w.Start.TimeZone
	}
	if w.End != nil {
		if t.end, endLoc, err = w.End.parse("end"); err != nil {
			return nil, err
		}
		t.hasEnd = true
		if t.zone == "" {
			t.zone = w.End.TimeZone
		}
	}
	switch {
	case startLoc != nil:
		t.loc = startLoc
	case endLoc != nil:
		t.loc = endLoc
	}
	if t.hasStart && t.hasEnd && t.end.Before(t.start) {
		return nil, fmt.Errorf("end %s before start %s", w.End.DateTime, w.Start.DateTime)
	}
	if w.IsAllDay && t.hasStart {
		t.allDay()
	}
	return t, t.checkRange()
}

// checkRange refuses times the API cannot carry.
func (t *times) checkRange() error {
	for _, x := range []struct {
		name string
		t    time.Time
		has  bool
	}{{"start", t.start, t.hasStart}, {"end", t.end, t.hasEnd}, {"created_at", t.createdAt, t.hasCreated}, {"updated_at", t.updatedAt, t.hasUpd}} {
		if x.has && !model.InTimestampRange(x.t) {
			return fmt.Errorf("%s %s is outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z",
				x.name, x.t.UTC().Format(time.RFC3339Nano))
		}
	}
	return nil
}

// allDay turns the instants of an all-day event into dates in the event's
// zone, with an exclusive end date, and moves the instants to the start of
// those dates.
func (t *times) allDay() {
	s := t.start.In(t.loc)
	sd := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, t.loc)
	ed := sd.AddDate(0, 0, 1)
	if t.hasEnd {
		e := t.end.In(t.loc)
		ed = time.Date(e.Year(), e.Month(), e.Day(), 0, 0, 0, 0, t.loc)
		if !e.Equal(ed) { // An inclusive end such as 23:59:59 ends the next day.
			ed = ed.AddDate(0, 0, 1)
		}
		if !ed.After(sd) {
			ed = sd.AddDate(0, 0, 1)
		}
	}
	t.start, t.end, t.hasEnd = sd, ed, true
	t.startDate, t.endDate = sd.Format(time.DateOnly), ed.Format(time.DateOnly)
}

// parse converts a postpress start or end into an instant and its zone.
func (d *DateTime) parse(field string) (time.Time, *time.Location, error) {
	var loc *time.Location
	if d.TimeZone != "" {
		var err error
		if loc, err = zone.Load(d.TimeZone); err != nil {
			return time.Time{}, nil, fmt.Errorf("%s.time_zone: %w", field, err)
		}
	}
	s := strings.TrimSpace(d.DateTime)
	if s == "" {
		return time.Time{}, nil, fmt.Errorf("%s.date_time: missing", field)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if loc == nil {
			loc = t.Location()
		}
		return t, loc, nil
	}
	if loc == nil {
		return time.Time{}, nil, fmt.Errorf("%s.date_time: %q has neither offset nor time zone", field, s)
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, loc, nil
		}
	}
	return time.Time{}, nil, fmt.Errorf("%s.date_time: bad time %q", field, s)
}

// parseTimestamp parses an optional RFC 3339 timestamp and reports
// whether one was given.
func parseTimestamp(field, s string) (time.Time, bool, error) {
	if s == "" {
		return time.Time{}, false, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%s: bad timestamp %q", field, s)
	}
	return t, true, nil
}

// looksLikeEmail reports whether s is a bare email address.
func looksLikeEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == ""
}
