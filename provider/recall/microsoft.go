package recall

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// graphEvent is the part of a Microsoft Graph event calsync reads.
type graphEvent struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Body    struct {
		ContentType string `json:"contentType"`
		Content     string `json:"content"`
	} `json:"body"`
	BodyPreview string `json:"bodyPreview"`
	Location    struct {
		DisplayName string `json:"displayName"`
	} `json:"location"`
	Start                 graphTime `json:"start"`
	End                   graphTime `json:"end"`
	OriginalStartTimeZone string    `json:"originalStartTimeZone"`
	OriginalEndTimeZone   string    `json:"originalEndTimeZone"`
	IsAllDay              bool      `json:"isAllDay"`
	IsCancelled           bool      `json:"isCancelled"`
	Organizer             struct {
		EmailAddress graphAddress `json:"emailAddress"`
	} `json:"organizer"`
	Attendees []struct {
		Type   string `json:"type"`
		Status struct {
			Response string `json:"response"`
		} `json:"status"`
		EmailAddress graphAddress `json:"emailAddress"`
	} `json:"attendees"`
	Recurrence     *graphRecurrence `json:"recurrence"`
	SeriesMasterID string           `json:"seriesMasterId"`
	OnlineMeeting  *struct {
		JoinURL string `json:"joinUrl"`
	} `json:"onlineMeeting"`
	OnlineMeetingURL string `json:"onlineMeetingUrl"`
	Sensitivity      string `json:"sensitivity"`
	ShowAs           string `json:"showAs"`
	ICalUID          string `json:"iCalUId"`
}

type graphAddress struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type graphTime struct {
	DateTime string `json:"dateTime"`
	TimeZone string `json:"timeZone"`
}

type graphRecurrence struct {
	Pattern struct {
		Type           string   `json:"type"`
		Interval       int      `json:"interval"`
		Month          int      `json:"month"`
		DayOfMonth     int      `json:"dayOfMonth"`
		DaysOfWeek     []string `json:"daysOfWeek"`
		FirstDayOfWeek string   `json:"firstDayOfWeek"`
		Index          string   `json:"index"`
	} `json:"pattern"`
	Range struct {
		Type                string `json:"type"`
		StartDate           string `json:"startDate"`
		EndDate             string `json:"endDate"`
		RecurrenceTimeZone  string `json:"recurrenceTimeZone"`
		NumberOfOccurrences int    `json:"numberOfOccurrences"`
	} `json:"range"`
}

// errCustomZone marks an Outlook custom time zone, which has no name to map.
var errCustomZone = errors.New("custom time zone")

// resolveZone maps a Graph time zone (a Windows name, "UTC", or an IANA
// name) to an IANA zone.
func resolveZone(name string) (string, *time.Location, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", nil, errors.New("missing time zone")
	case name == "UTC", strings.EqualFold(name, "tzone://Microsoft/Utc"):
		return "UTC", time.UTC, nil
	case strings.HasPrefix(name, "tzone://Microsoft/Custom"), name == "Customized Time Zone":
		return "", nil, errCustomZone
	}
	iana := name
	if z, ok := windowsZones[name]; ok {
		iana = z
	}
	loc, err := loadZone(iana)
	if err != nil {
		return "", nil, err
	}
	return iana, loc, nil
}

// microsoftDetails reads a raw Microsoft Graph event.
func microsoftDetails(raw []byte) (details, error) {
	var g graphEvent
	if err := json.Unmarshal(raw, &g); err != nil {
		return details{}, fmt.Errorf("raw microsoft event: %w", err)
	}
	d := details{
		title:       g.Subject,
		description: g.Body.Content,
		location:    g.Location.DisplayName,
		masterID:    g.SeriesMasterID,
		icalUID:     g.ICalUID,
		platformID:  g.ID,
		status:      calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED,
	}
	if d.description == "" {
		d.description = g.BodyPreview
	}
	d.texts = []string{d.location, d.description}
	if g.IsCancelled {
		d.status = calsyncv1.EventStatus_EVENT_STATUS_CANCELLED
	}
	switch strings.ToLower(g.Sensitivity) {
	case "normal":
		d.visibility = calsyncv1.Visibility_VISIBILITY_DEFAULT
	case "personal", "private":
		d.visibility = calsyncv1.Visibility_VISIBILITY_PRIVATE
	case "confidential":
		d.visibility = calsyncv1.Visibility_VISIBILITY_CONFIDENTIAL
	}
	switch strings.ToLower(g.ShowAs) {
	case "free":
		d.transparency = calsyncv1.Transparency_TRANSPARENCY_TRANSPARENT
	case "busy", "tentative", "oof", "workingelsewhere":
		d.transparency = calsyncv1.Transparency_TRANSPARENCY_OPAQUE
	}
	if a := g.Organizer.EmailAddress; a.Address != "" || a.Name != "" {
		d.organizer = &calsyncv1.Person{Email: a.Address, DisplayName: a.Name}
	}
	for _, a := range g.Attendees {
		d.attendees = append(d.attendees, &calsyncv1.Attendee{
			Email:          a.EmailAddress.Address,
			DisplayName:    a.EmailAddress.Name,
			ResponseStatus: responseStatus(a.Status.Response),
			Optional:       strings.EqualFold(a.Type, "optional"),
			Resource:       strings.EqualFold(a.Type, "resource"),
		})
	}
	if g.OnlineMeeting != nil {
		d.links = append(d.links, g.OnlineMeeting.JoinURL)
	}
	d.links = append(d.links, g.OnlineMeetingURL)

	if g.Start.DateTime != "" {
		if err := d.graphTimes(&g); err != nil {
			return details{}, err
		}
	}
	if g.Recurrence != nil {
		loc := time.UTC
		if _, l, err := resolveZone(g.Recurrence.Range.RecurrenceTimeZone); err == nil {
			loc = l
		} else if d.zone != "" {
			loc, _ = loadZone(d.zone)
		}
		if rule := rruleFromGraph(g.Recurrence, g.IsAllDay, loc); rule != "" {
			d.recurrence = []string{rule}
		}
	}
	return d, nil
}

// graphTimes converts Graph's zone-less start and end. The instants come
// from start/end in their timeZone (often "UTC"); the reported zone is the
// one the event was scheduled in (originalStartTimeZone) when it maps.
func (d *details) graphTimes(g *graphEvent) error {
	startZone, startLoc, err := resolveZone(g.Start.TimeZone)
	custom := errors.Is(err, errCustomZone)
	if err != nil && !custom {
		return fmt.Errorf("start.timeZone: %w", err)
	}
	d.zone = startZone
	if g.OriginalStartTimeZone != "" {
		if z, _, err := resolveZone(g.OriginalStartTimeZone); err == nil {
			d.zone = z
		} else if !errors.Is(err, errCustomZone) {
			return fmt.Errorf("originalStartTimeZone: %w", err)
		}
	}
	if custom {
		// No zone to read the wall-clock times in: Recall's start_time and
		// end_time give the instants.
		if g.IsAllDay {
			d.allDay, d.startDate, d.endDate = true, datePart(g.Start.DateTime), datePart(g.End.DateTime)
			return d.allDayInstants(time.UTC)
		}
		return nil
	}
	endLoc := startLoc
	if g.End.TimeZone != "" && g.End.TimeZone != g.Start.TimeZone {
		if _, l, err := resolveZone(g.End.TimeZone); err == nil {
			endLoc = l
		} else if !errors.Is(err, errCustomZone) {
			return fmt.Errorf("end.timeZone: %w", err)
		}
	}
	if g.IsAllDay {
		d.allDay, d.startDate, d.endDate = true, datePart(g.Start.DateTime), datePart(g.End.DateTime)
		loc := startLoc
		if d.zone != "" {
			if l, err := loadZone(d.zone); err == nil {
				loc = l
			}
		}
		return d.allDayInstants(loc)
	}
	s, err := graphDateTime(g.Start.DateTime, startLoc)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	d.start = &s
	if g.End.DateTime != "" {
		e, err := graphDateTime(g.End.DateTime, endLoc)
		if err != nil {
			return fmt.Errorf("end: %w", err)
		}
		d.end = &e
	}
	return nil
}

func (d *details) allDayInstants(loc *time.Location) error {
	s, e, endDate, err := allDayDates(d.startDate, d.endDate, loc)
	if err != nil {
		return err
	}
	d.start, d.end, d.endDate = &s, &e, endDate
	return nil
}

// datePart returns the YYYY-MM-DD of a Graph dateTime.
func datePart(s string) string {
	if len(s) >= 10 {
		return s[:10]
	}
	return s
}

// graphDateTime parses Graph's "2026-01-20T14:30:00.0000000" in loc (an
// explicit offset, should one appear, wins).
func graphDateTime(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, loc); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}

var graphDays = map[string]string{
	"sunday": "SU", "monday": "MO", "tuesday": "TU", "wednesday": "WE",
	"thursday": "TH", "friday": "FR", "saturday": "SA",
}

var graphIndex = map[string]string{
	"first": "1", "second": "2", "third": "3", "fourth": "4", "last": "-1",
}

// rruleFromGraph converts a Graph patternedRecurrence into an RFC 5545
// RRULE line, or "" for a pattern it does not know. UNTIL is the end of
// the range's last day in the recurrence's zone, in UTC (a date for
// all-day events), as RFC 5545 requires.
func rruleFromGraph(r *graphRecurrence, allDay bool, loc *time.Location) string {
	p := r.Pattern
	var parts []string
	days := func() (string, bool) {
		var out []string
		for _, d := range p.DaysOfWeek {
			code, ok := graphDays[strings.ToLower(d)]
			if !ok {
				return "", false
			}
			out = append(out, code)
		}
		return strings.Join(out, ","), len(out) > 0
	}
	switch p.Type {
	case "daily":
		parts = append(parts, "FREQ=DAILY")
	case "weekly":
		parts = append(parts, "FREQ=WEEKLY")
		if byDay, ok := days(); ok {
			parts = append(parts, "BYDAY="+byDay)
		}
	case "absoluteMonthly":
		if p.DayOfMonth < 1 || p.DayOfMonth > 31 {
			return ""
		}
		parts = append(parts, "FREQ=MONTHLY", "BYMONTHDAY="+strconv.Itoa(p.DayOfMonth))
	case "relativeMonthly", "relativeYearly":
		byDay, ok := days()
		if !ok {
			return ""
		}
		if p.Type == "relativeMonthly" {
			parts = append(parts, "FREQ=MONTHLY")
		} else {
			if p.Month < 1 || p.Month > 12 {
				return ""
			}
			parts = append(parts, "FREQ=YEARLY", "BYMONTH="+strconv.Itoa(p.Month))
		}
		parts = append(parts, "BYDAY="+byDay)
		idx := graphIndex[strings.ToLower(p.Index)]
		if idx == "" {
			idx = "1"
		}
		parts = append(parts, "BYSETPOS="+idx)
	case "absoluteYearly":
		if p.Month < 1 || p.Month > 12 || p.DayOfMonth < 1 || p.DayOfMonth > 31 {
			return ""
		}
		parts = append(parts, "FREQ=YEARLY", "BYMONTH="+strconv.Itoa(p.Month), "BYMONTHDAY="+strconv.Itoa(p.DayOfMonth))
	default:
		return ""
	}
	if p.Interval > 1 {
		parts = append(parts, "INTERVAL="+strconv.Itoa(p.Interval))
	}
	if p.Type == "weekly" && p.FirstDayOfWeek != "" && len(p.DaysOfWeek) > 1 {
		if code, ok := graphDays[strings.ToLower(p.FirstDayOfWeek)]; ok {
			parts = append(parts, "WKST="+code)
		}
	}
	switch r.Range.Type {
	case "endDate":
		if end, err := time.ParseInLocation(time.DateOnly, r.Range.EndDate, loc); err == nil {
			if allDay {
				parts = append(parts, "UNTIL="+end.Format("20060102"))
			} else {
				last := end.AddDate(0, 0, 1).Add(-time.Second)
				parts = append(parts, "UNTIL="+last.UTC().Format("20060102T150405Z"))
			}
		}
	case "numbered":
		if r.Range.NumberOfOccurrences > 0 {
			parts = append(parts, "COUNT="+strconv.Itoa(r.Range.NumberOfOccurrences))
		}
	}
	return "RRULE:" + strings.Join(parts, ";")
}
