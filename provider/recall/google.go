package recall

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
)

// googleEvent is the part of a Google Calendar v3 event calsync reads.
type googleEvent struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	Summary     string     `json:"summary"`
	Description string     `json:"description"`
	Location    string     `json:"location"`
	Start       googleTime `json:"start"`
	End         googleTime `json:"end"`
	Organizer   struct {
		Email       string `json:"email"`
		DisplayName string `json:"displayName"`
	} `json:"organizer"`
	Attendees []struct {
		Email          string `json:"email"`
		DisplayName    string `json:"displayName"`
		ResponseStatus string `json:"responseStatus"`
		Optional       bool   `json:"optional"`
		Resource       bool   `json:"resource"`
	} `json:"attendees"`
	Recurrence       []string `json:"recurrence"`
	RecurringEventID string   `json:"recurringEventId"`
	HangoutLink      string   `json:"hangoutLink"`
	ConferenceData   struct {
		EntryPoints []struct {
			EntryPointType string `json:"entryPointType"`
			URI            string `json:"uri"`
		} `json:"entryPoints"`
	} `json:"conferenceData"`
	Visibility   string `json:"visibility"`
	Transparency string `json:"transparency"`
	ICalUID      string `json:"iCalUID"`
}

type googleTime struct {
	Date     string `json:"date"`
	DateTime string `json:"dateTime"`
	TimeZone string `json:"timeZone"`
}

// googleDetails reads a raw Google Calendar event.
func googleDetails(raw []byte) (details, error) {
	var g googleEvent
	if err := json.Unmarshal(raw, &g); err != nil {
		return details{}, fmt.Errorf("raw google event: %w", err)
	}
	d := details{
		title:       g.Summary,
		description: g.Description,
		location:    g.Location,
		recurrence:  g.Recurrence,
		masterID:    g.RecurringEventID,
		icalUID:     g.ICalUID,
		platformID:  g.ID,
		texts:       []string{g.Location, g.Description},
	}
	switch g.Status {
	case "confirmed":
		d.status = calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED
	case "tentative":
		d.status = calsyncv1.EventStatus_EVENT_STATUS_TENTATIVE
	case "cancelled":
		d.status = calsyncv1.EventStatus_EVENT_STATUS_CANCELLED
	}
	// Google leaves out fields that have their default value.
	d.visibility = model.Visibility(cmp.Or(g.Visibility, "default"))
	d.transparency = model.Transparency(cmp.Or(g.Transparency, "opaque"))
	if g.Organizer.Email != "" || g.Organizer.DisplayName != "" {
		d.organizer = &calsyncv1.Person{Email: g.Organizer.Email, DisplayName: g.Organizer.DisplayName}
	}
	for _, a := range g.Attendees {
		d.attendees = append(d.attendees, &calsyncv1.Attendee{
			Email:          a.Email,
			DisplayName:    a.DisplayName,
			ResponseStatus: responseStatus(a.ResponseStatus),
			Optional:       a.Optional,
			Resource:       a.Resource,
		})
	}
	d.links = append(d.links, g.HangoutLink)
	for _, ep := range g.ConferenceData.EntryPoints {
		if ep.EntryPointType == "video" {
			d.links = append(d.links, ep.URI)
		}
	}

	zone := g.Start.TimeZone
	if zone == "" {
		zone = g.End.TimeZone
	}
	loc := time.UTC
	if zone != "" {
		l, err := loadZone(zone)
		if err != nil {
			return details{}, err
		}
		loc, d.zone = l, zone
	}
	switch {
	case g.Start.Date != "":
		s, e, endDate, err := allDayDates(g.Start.Date, g.End.Date, loc)
		if err != nil {
			return details{}, err
		}
		d.allDay, d.start, d.end, d.startDate, d.endDate = true, &s, &e, g.Start.Date, endDate
	case g.Start.DateTime != "":
		s, err := googleDateTime(g.Start.DateTime, loc)
		if err != nil {
			return details{}, fmt.Errorf("start: %w", err)
		}
		d.start = &s
		if g.End.DateTime != "" {
			e, err := googleDateTime(g.End.DateTime, loc)
			if err != nil {
				return details{}, fmt.Errorf("end: %w", err)
			}
			d.end = &e
		}
	}
	return d, nil
}

// googleDateTime parses an RFC 3339 time; Google always writes an offset,
// but one without is read in the event's zone.
func googleDateTime(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, loc); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}
