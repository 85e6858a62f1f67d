package recall

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/meeting"
	"github.com/calsync/calsync/provider/zone"
)

// NormalizeCalendar turns a Recall calendar into calsync's model. The
// OAuth fields are never part of [Calendar], so they cannot leak here.
func NormalizeCalendar(c *Calendar) *calsyncv1.Calendar {
	out := &calsyncv1.Calendar{
		Id:                 model.CalendarID(model.ProviderRecall, "", c.ID),
		Provider:           model.ProviderRecall,
		ProviderCalendarId: c.ID,
		Platform:           c.Platform,
		Email:              c.PlatformEmail,
		Status:             calendarStatus(c.Status),
		Metadata:           structFromJSON(c.Metadata),
		ProviderCreateTime: timestamp(c.CreatedAt),
		ProviderUpdateTime: timestamp(c.UpdatedAt),
	}
	for _, sc := range c.StatusChanges {
		ch := &calsyncv1.CalendarStatusChange{Status: calendarStatus(sc.Status), Time: timestamp(sc.CreatedAt)}
		if len(sc.Details) > 0 {
			if s, err := structpb.NewStruct(sc.Details); err == nil {
				ch.Details = s
			}
		}
		out.StatusChanges = append(out.StatusChanges, ch)
	}
	return out
}

func calendarStatus(s string) calsyncv1.CalendarStatus {
	switch s {
	case "connecting":
		return calsyncv1.CalendarStatus_CALENDAR_STATUS_CONNECTING
	case "connected":
		return calsyncv1.CalendarStatus_CALENDAR_STATUS_CONNECTED
	case "disconnected":
		return calsyncv1.CalendarStatus_CALENDAR_STATUS_DISCONNECTED
	}
	return calsyncv1.CalendarStatus_CALENDAR_STATUS_UNSPECIFIED
}

// NormalizeEvent turns a Recall calendar event into calsync's model, taking
// the details from the raw Google or Microsoft event as the providers'
// field table describes. Recall's own start_time and end_time win over the
// raw times of a timed event; an all-day event's instants are the starts
// of its dates, as the model defines them.
//
// recurring_master_id stays empty: Recall identifies events by its own
// uuids, while instances name their master by the platform's id
// (recurringEventId, seriesMasterId), from which no calsync id can be
// derived. provider_recurring_master_id carries that platform id, which
// groups the instances of a series.
//
// A deleted event (is_deleted) is a tombstone that keeps its fields; if
// its raw event cannot be read, the tombstone carries only the Recall
// fields rather than failing. Impossible data (an end before the start,
// an unknown time zone) returns an error wrapping [ErrMalformed].
func NormalizeEvent(e *Event) (*calsyncv1.CalendarEvent, error) {
	ev, raw, err := NormalizeEventJSON(e)
	if err != nil || raw.IsZero() {
		return ev, err
	}
	if ev.Raw, err = model.StructFromJSON(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("%w: raw: %w", ErrMalformed, err)
	}
	return ev, nil
}

// NormalizeEventJSON is NormalizeEvent, returning the raw payload as the
// JSON document it is (e.Document, or e encoded again when it has none)
// rather than decoded in the event, whose Raw is unset: the document need
// not be decoded to be stored (see store.Tx.PutEventRawJSON). A document
// that is not a JSON object is no payload.
func NormalizeEventJSON(e *Event) (*calsyncv1.CalendarEvent, model.RawJSON, error) {
	ev, err := normalizeEvent(e)
	if err != nil {
		if !e.IsDeleted || e.ID == "" {
			return nil, model.RawJSON{}, err
		}
		ev = baseEvent(e)
	}
	if e.IsDeleted {
		ev.Deleted = true
	}
	doc := e.Document
	if len(doc) == 0 {
		if doc, err = json.Marshal(e); err != nil {
			return nil, model.RawJSON{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	raw, err := model.CheckRawJSON(doc)
	if err != nil {
		return ev, model.RawJSON{}, nil
	}
	return ev, raw, nil
}

// baseEvent holds the fields every Recall event has, whatever its raw.
func baseEvent(e *Event) *calsyncv1.CalendarEvent {
	ev := &calsyncv1.CalendarEvent{
		Id:                 model.EventID(model.ProviderRecall, "", e.ID),
		Provider:           model.ProviderRecall,
		ProviderEventId:    e.ID,
		ProviderCalendarId: e.CalendarID,
		PlatformEventId:    e.PlatformID,
		IcalUid:            e.ICalUID,
		ProviderCreateTime: optionalTimestamp(e.CreatedAt),
		ProviderUpdateTime: optionalTimestamp(e.UpdatedAt),
		StartTime:          optionalTimestamp(e.StartTime),
		EndTime:            optionalTimestamp(e.EndTime),
	}
	if e.CalendarID != "" {
		ev.CalendarId = model.CalendarID(model.ProviderRecall, "", e.CalendarID)
	}
	return ev
}

func normalizeEvent(e *Event) (*calsyncv1.CalendarEvent, error) {
	if e.ID == "" {
		return nil, fmt.Errorf("%w: event without id", ErrMalformed)
	}
	if e.CalendarID == "" {
		return nil, fmt.Errorf("%w: event %s without calendar_id", ErrMalformed, e.ID)
	}
	for _, t := range []*time.Time{e.StartTime, e.EndTime, e.CreatedAt, e.UpdatedAt} {
		if t != nil && !model.InTimestampRange(*t) {
			return nil, fmt.Errorf("%w: event %s: time out of range", ErrMalformed, e.ID)
		}
	}
	ev := baseEvent(e)
	var (
		d   details
		err error
	)
	raw := bytes.TrimSpace(e.Raw)
	hasRaw := len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
	switch {
	case !hasRaw:
	case platformOf(e, raw) == PlatformMicrosoft:
		d, err = microsoftDetails(raw)
	default:
		d, err = googleDetails(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: event %s: %w", ErrMalformed, e.ID, err)
	}
	ev.Title, ev.Description, ev.Location = d.title, d.description, d.location
	ev.TimeZone = d.zone
	ev.Status = d.status
	ev.Organizer = d.organizer
	ev.Attendees = d.attendees
	ev.Recurrence = d.recurrence
	ev.ProviderRecurringMasterId = d.masterID
	ev.Visibility, ev.Transparency = d.visibility, d.transparency
	if ev.IcalUid == "" {
		ev.IcalUid = d.icalUID
	}
	if ev.PlatformEventId == "" {
		ev.PlatformEventId = d.platformID
	}
	// Recall's own times win over the raw ones, except for an all-day
	// event, whose instants are the starts of its dates.
	start, end := e.StartTime, e.EndTime
	if d.allDay || start == nil {
		start = d.start
	}
	if d.allDay || end == nil {
		end = d.end
	}
	// The times are checked after their conversion: the start of an all-day
	// event's first date, in its zone, can lie outside what the API carries
	// (midnight of 0001-01-01 in Tokyo is in year 0 in UTC).
	for _, t := range []*time.Time{start, end} {
		if t != nil && !model.InTimestampRange(*t) {
			return nil, fmt.Errorf("%w: event %s: time %s out of range", ErrMalformed, e.ID, t.UTC().Format(time.RFC3339))
		}
	}
	ev.StartTime, ev.EndTime = optionalTimestamp(start), optionalTimestamp(end)
	if d.allDay {
		ev.AllDay = true
		ev.StartDate, ev.EndDate = d.startDate, d.endDate
	}
	if s, en := ev.GetStartTime(), ev.GetEndTime(); s != nil && en != nil && en.AsTime().Before(s.AsTime()) {
		return nil, fmt.Errorf("%w: event %s ends before it starts", ErrMalformed, e.ID)
	}
	ev.MeetingUrl, ev.MeetingPlatform = meetingLink(e, d)
	return ev, nil
}

// platformOf tells a Microsoft event from a Google one: by Recall's
// platform field, or by the shape of raw when the field is unknown.
func platformOf(e *Event, raw []byte) string {
	switch e.Platform {
	case PlatformGoogle, PlatformMicrosoft:
		return e.Platform
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) == nil {
		for _, k := range []string{"subject", "isAllDay", "seriesMasterId", "@odata.etag", "bodyPreview"} {
			if _, ok := probe[k]; ok {
				return PlatformMicrosoft
			}
		}
	}
	return PlatformGoogle
}

// details is what the raw platform event says, in calsync's terms.
type details struct {
	title, description, location string
	start, end                   *time.Time // nil when the platform gives none
	zone                         string
	allDay                       bool
	startDate, endDate           string
	status                       calsyncv1.EventStatus
	organizer                    *calsyncv1.Person
	attendees                    []*calsyncv1.Attendee
	recurrence                   []string
	masterID                     string
	visibility                   calsyncv1.Visibility
	transparency                 calsyncv1.Transparency
	icalUID, platformID          string
	// links are meeting links the platform reports in dedicated fields,
	// best first; texts are where else to look for one.
	links []string
	texts []string
}

// meetingLink picks the event's meeting link: Recall's meeting_url first,
// then the platform's dedicated fields, then links in the location and
// description.
func meetingLink(e *Event, d details) (string, string) {
	if u := strings.TrimSpace(e.MeetingURL); u != "" {
		if p := meeting.Platform(u); p != "" {
			if p == meeting.Other {
				if rp := recallMeetingPlatform(e.MeetingPlatform); rp != "" {
					p = rp
				}
			}
			return u, p
		}
	}
	for _, u := range d.links {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if p := meeting.Platform(u); p != "" {
			return u, p
		}
	}
	return meeting.Find(d.texts...)
}

// recallMeetingPlatform maps Recall's meeting_platform (values not
// documented) onto calsync's platform names when it is a known one.
func recallMeetingPlatform(p string) string {
	switch strings.ToLower(strings.NewReplacer("-", "_", " ", "_").Replace(p)) {
	case "zoom":
		return meeting.Zoom
	case "google_meet", "meet", "hangouts", "hangouts_meet":
		return meeting.GoogleMeet
	case "microsoft_teams", "teams", "microsoft_teams_live", "teams_live":
		return meeting.MicrosoftTeams
	case "webex", "cisco_webex":
		return meeting.Webex
	case "goto_meeting", "gotomeeting", "goto":
		return meeting.GoToMeeting
	case "chime", "amazon_chime":
		return meeting.Chime
	case "whereby":
		return meeting.Whereby
	case "jitsi":
		return meeting.Jitsi
	}
	return ""
}

// loadZone loads an IANA zone, refusing "" and "Local".
func loadZone(name string) (*time.Location, error) { return zone.Load(name) }

// midnight returns the start of date (YYYY-MM-DD) in loc.
func midnight(date string, loc *time.Location) (time.Time, error) {
	t, err := time.ParseInLocation(time.DateOnly, date, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad date %q", date)
	}
	return t, nil
}

// allDayDates validates an all-day range and returns its instants.
func allDayDates(startDate, endDate string, loc *time.Location) (time.Time, time.Time, string, error) {
	s, err := midnight(startDate, loc)
	if err != nil {
		return time.Time{}, time.Time{}, "", err
	}
	if endDate == "" {
		e := s.AddDate(0, 0, 1)
		return s, e, e.Format(time.DateOnly), nil
	}
	e, err := midnight(endDate, loc)
	if err != nil {
		return time.Time{}, time.Time{}, "", err
	}
	if e.Before(s) {
		return time.Time{}, time.Time{}, "", errors.New("end date before start date")
	}
	return s, e, endDate, nil
}

// timestamp converts a time Recall always sends (a calendar's), nil when
// it is missing or cannot be carried.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() || !model.InTimestampRange(t) {
		return nil
	}
	return timestamppb.New(t)
}

// optionalTimestamp converts an optional time: nil, and a time the API
// cannot carry, are nil; every other time, the earliest instant (Go's zero
// time) included, is kept.
func optionalTimestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil || !model.InTimestampRange(*t) {
		return nil
	}
	return timestamppb.New(*t)
}

// structFromJSON converts a JSON object to a Struct; anything else is nil.
func structFromJSON(b []byte) *structpb.Struct {
	// A JSON null decodes to no map at all, which is no Struct either.
	if len(b) == 0 || string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	s, err := model.StructFromJSON(b)
	if err != nil {
		return nil
	}
	return s
}

func responseStatus(s string) calsyncv1.ResponseStatus {
	switch strings.ToLower(s) {
	case "accepted":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED
	case "declined":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_DECLINED
	case "tentative", "tentativelyaccepted":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_TENTATIVE
	case "needsaction", "none", "notresponded":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_NEEDS_ACTION
	case "organizer":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_ORGANIZER
	}
	return calsyncv1.ResponseStatus_RESPONSE_STATUS_UNSPECIFIED
}
