package postpress

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/meeting"
)

// Normalize turns a parsed webhook into calsync's event model. body is the
// webhook as received, the one w was parsed from, and becomes the event's
// raw payload (nil leaves raw unset): model.StructFromJSON(body). A
// deleted webhook becomes a tombstone that carries only the identifiers.
// Errors wrap [ErrMalformed].
func Normalize(w *Webhook, body []byte) (*calsyncv1.CalendarEvent, error) {
	ev, raw, err := NormalizeJSON(w, body)
	if err != nil || raw.IsZero() {
		return ev, err
	}
	if ev.Raw, err = model.StructFromJSON(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("%w: raw: %w", ErrMalformed, err)
	}
	return ev, nil
}

// NormalizeJSON is Normalize, returning the raw payload as the JSON body
// it is rather than decoded in the event, whose Raw is unset: the body need
// not be decoded to be stored (see store.Tx.PutEventRawJSON).
func NormalizeJSON(w *Webhook, body []byte) (*calsyncv1.CalendarEvent, model.RawJSON, error) {
	t, err := w.validate()
	if err != nil {
		return nil, model.RawJSON{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	ev := &calsyncv1.CalendarEvent{
		Id:                 w.EventID(),
		CalendarId:         w.CalendarID(),
		Provider:           model.ProviderPostpress,
		ProviderEventId:    w.ID,
		ProviderCalendarId: w.ProviderCalendarID,
	}
	if w.Deleted() {
		ev.Deleted = true
		return ev, model.RawJSON{}, nil
	}
	ev.Title = w.Title
	ev.Description = w.Body
	ev.Location = w.Location
	ev.TimeZone = t.zone
	if t.hasStart {
		ev.StartTime = timestamppb.New(t.start)
	}
	if t.hasEnd {
		ev.EndTime = timestamppb.New(t.end)
	}
	if w.IsAllDay && t.startDate != "" {
		ev.AllDay = true
		ev.StartDate, ev.EndDate = t.startDate, t.endDate
	}
	ev.Status = calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED
	if w.IsCancelled {
		ev.Status = calsyncv1.EventStatus_EVENT_STATUS_CANCELLED
	}
	if o := w.Organizer; o != nil && (o.Email != "" || o.DisplayName != "") {
		ev.Organizer = &calsyncv1.Person{Email: o.Email, DisplayName: o.DisplayName}
	}
	for _, a := range w.Attendees {
		if a.Email == "" && a.DisplayName == "" {
			continue
		}
		rs := responseStatus(a.ResponseStatus)
		if rs == calsyncv1.ResponseStatus_RESPONSE_STATUS_UNSPECIFIED && a.Organizer {
			rs = calsyncv1.ResponseStatus_RESPONSE_STATUS_ORGANIZER
		}
		ev.Attendees = append(ev.Attendees, &calsyncv1.Attendee{
			Email:          a.Email,
			DisplayName:    a.DisplayName,
			ResponseStatus: rs,
			Optional:       a.Optional,
			Resource:       a.Resource,
		})
	}
	ev.AttendeesHidden = w.IsAttendeesListHidden
	ev.Recurrence = recurrenceLines(w.Recurrence)
	if w.MasterEventID != "" && w.MasterEventID != w.ID {
		ev.ProviderRecurringMasterId = w.MasterEventID
		ev.RecurringMasterId = model.EventID(model.ProviderPostpress,
			model.PostpressScope(w.AccountID, w.ProviderCalendarID), w.MasterEventID)
	}
	ev.Visibility = model.Visibility(w.Visibility)
	ev.Transparency = model.Transparency(w.Transparency)
	if t.hasCreated {
		ev.ProviderCreateTime = timestamppb.New(t.createdAt)
	}
	if t.hasUpd {
		ev.ProviderUpdateTime = timestamppb.New(t.updatedAt)
	}
	ev.MeetingUrl, ev.MeetingPlatform = meeting.Find(w.Location, w.Body)
	if len(body) == 0 {
		return ev, model.RawJSON{}, nil
	}
	if !w.rawJSON.IsZero() {
		return ev, w.rawJSON, nil
	}
	raw, err := model.CheckRawJSON(body)
	if err != nil {
		return nil, model.RawJSON{}, fmt.Errorf("%w: raw: %w", ErrMalformed, err)
	}
	return ev, raw, nil
}

// CalendarFor returns the calendar a webhook belongs to. postpress sends no
// calendar object, so only the identity is known; the owner's address is
// the calendar id when that id is an email address.
func CalendarFor(w *Webhook) *calsyncv1.Calendar {
	c := &calsyncv1.Calendar{
		Id:                 w.CalendarID(),
		Provider:           model.ProviderPostpress,
		ProviderCalendarId: w.ProviderCalendarID,
		AccountId:          w.AccountID,
	}
	if looksLikeEmail(w.ProviderCalendarID) {
		c.Email = w.ProviderCalendarID
	}
	return c
}

// recurrenceLines returns RFC 5545 lines, adding the "RRULE:" property
// name to bare rules ("FREQ=WEEKLY;...").
func recurrenceLines(r Recurrence) []string {
	var out []string
	for _, l := range r {
		up := strings.ToUpper(l)
		switch {
		case strings.HasPrefix(up, "RRULE:"), strings.HasPrefix(up, "EXRULE:"),
			strings.HasPrefix(up, "RDATE"), strings.HasPrefix(up, "EXDATE"),
			strings.HasPrefix(up, "DTSTART"):
			out = append(out, l)
		default:
			out = append(out, "RRULE:"+l)
		}
	}
	return out
}

func responseStatus(s string) calsyncv1.ResponseStatus {
	switch strings.ToLower(strings.ReplaceAll(s, "_", "")) {
	case "accepted", "yes":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED
	case "declined", "no":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_DECLINED
	case "tentative", "tentativelyaccepted", "maybe":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_TENTATIVE
	case "needsaction", "none", "notresponded", "pending":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_NEEDS_ACTION
	case "organizer":
		return calsyncv1.ResponseStatus_RESPONSE_STATUS_ORGANIZER
	}
	return calsyncv1.ResponseStatus_RESPONSE_STATUS_UNSPECIFIED
}
