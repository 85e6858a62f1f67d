package recalltest

import (
	"time"
)

// GoogleBuilder builds the raw Google Calendar v3 event of a Recall event.
// Methods chain: recalltest.Google("evt1").Summary("Standup").Timed(s, e, "Europe/Paris").Event(calID).
type GoogleBuilder struct {
	raw        map[string]any
	start, end time.Time
}

// Google starts a confirmed Google event with the platform id id.
func Google(id string) *GoogleBuilder {
	return &GoogleBuilder{raw: map[string]any{
		"kind":    "calendar#event",
		"id":      id,
		"status":  "confirmed",
		"iCalUID": id + "@google.com",
	}}
}

// Set sets any raw field.
func (b *GoogleBuilder) Set(key string, value any) *GoogleBuilder { b.raw[key] = value; return b }

// Summary sets the title.
func (b *GoogleBuilder) Summary(s string) *GoogleBuilder { return b.Set("summary", s) }

// Description sets the description (Google allows some HTML).
func (b *GoogleBuilder) Description(s string) *GoogleBuilder { return b.Set("description", s) }

// Location sets the location.
func (b *GoogleBuilder) Location(s string) *GoogleBuilder { return b.Set("location", s) }

// Status sets "confirmed", "tentative" or "cancelled".
func (b *GoogleBuilder) Status(s string) *GoogleBuilder { return b.Set("status", s) }

// Timed sets start and end as dateTime in zone (an IANA name).
func (b *GoogleBuilder) Timed(start, end time.Time, zone string) *GoogleBuilder {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		panic(err)
	}
	b.start, b.end = start, end
	b.raw["start"] = map[string]any{"dateTime": start.In(loc).Format(time.RFC3339), "timeZone": zone}
	b.raw["end"] = map[string]any{"dateTime": end.In(loc).Format(time.RFC3339), "timeZone": zone}
	return b
}

// AllDay sets start and end dates (YYYY-MM-DD, end exclusive).
func (b *GoogleBuilder) AllDay(startDate, endDate string) *GoogleBuilder {
	s, _ := time.Parse(time.DateOnly, startDate)
	e, _ := time.Parse(time.DateOnly, endDate)
	b.start, b.end = s, e
	b.raw["start"] = map[string]any{"date": startDate}
	b.raw["end"] = map[string]any{"date": endDate}
	return b
}

// Organizer sets the organizer.
func (b *GoogleBuilder) Organizer(email, name string) *GoogleBuilder {
	return b.Set("organizer", map[string]any{"email": email, "displayName": name})
}

// Attendee adds an attendee with a responseStatus ("needsAction",
// "accepted", "declined", "tentative").
func (b *GoogleBuilder) Attendee(email, name, response string) *GoogleBuilder {
	list, _ := b.raw["attendees"].([]any)
	a := map[string]any{"email": email, "responseStatus": response}
	if name != "" {
		a["displayName"] = name
	}
	b.raw["attendees"] = append(list, a)
	return b
}

// Recurrence sets the recurrence lines of a master ("RRULE:FREQ=WEEKLY").
func (b *GoogleBuilder) Recurrence(lines ...string) *GoogleBuilder {
	l := make([]any, len(lines))
	for i, s := range lines {
		l[i] = s
	}
	return b.Set("recurrence", l)
}

// Instance makes the event an instance of the master with platform id
// masterID.
func (b *GoogleBuilder) Instance(masterID string, originalStart time.Time) *GoogleBuilder {
	b.raw["recurringEventId"] = masterID
	b.raw["originalStartTime"] = map[string]any{"dateTime": originalStart.Format(time.RFC3339)}
	return b
}

// Meet adds a Google Meet link as hangoutLink and conferenceData.
func (b *GoogleBuilder) Meet(link string) *GoogleBuilder {
	b.raw["hangoutLink"] = link
	b.raw["conferenceData"] = map[string]any{
		"conferenceSolution": map[string]any{"key": map[string]any{"type": "hangoutsMeet"}, "name": "Google Meet"},
		"entryPoints": []any{
			map[string]any{"entryPointType": "video", "uri": link, "label": link[len("https://"):]},
		},
	}
	return b
}

// Raw returns the raw event.
func (b *GoogleBuilder) Raw() map[string]any { return b.raw }

// Event returns a Recall event on calendarID carrying the raw event, with
// Recall's start_time and end_time set from the builder's times. Pass it
// to [Server.PutEvent].
func (b *GoogleBuilder) Event(calendarID string) Event {
	id, _ := b.raw["id"].(string)
	uid, _ := b.raw["iCalUID"].(string)
	return Event{
		CalendarID: calendarID,
		StartTime:  b.start,
		EndTime:    b.end,
		Platform:   "google_calendar",
		PlatformID: id,
		ICalUID:    uid,
		Raw:        b.raw,
	}
}

// MicrosoftBuilder builds the raw Microsoft Graph event of a Recall event.
type MicrosoftBuilder struct {
	raw        map[string]any
	start, end time.Time
}

// Microsoft starts a single-instance Graph event with the platform id id.
func Microsoft(id string) *MicrosoftBuilder {
	return &MicrosoftBuilder{raw: map[string]any{
		"@odata.etag": `W/"1"`,
		"id":          id,
		"iCalUId":     "040000008200E00074C5B7101A82E008" + id,
		"type":        "singleInstance",
		"isAllDay":    false,
		"isCancelled": false,
		"sensitivity": "normal",
		"showAs":      "busy",
	}}
}

// Set sets any raw field.
func (b *MicrosoftBuilder) Set(key string, value any) *MicrosoftBuilder { b.raw[key] = value; return b }

// Subject sets the title.
func (b *MicrosoftBuilder) Subject(s string) *MicrosoftBuilder { return b.Set("subject", s) }

// Body sets an HTML body and its preview.
func (b *MicrosoftBuilder) Body(html, preview string) *MicrosoftBuilder {
	b.raw["body"] = map[string]any{"contentType": "html", "content": html}
	b.raw["bodyPreview"] = preview
	return b
}

// Location sets location.displayName.
func (b *MicrosoftBuilder) Location(s string) *MicrosoftBuilder {
	return b.Set("location", map[string]any{"displayName": s, "locationType": "default"})
}

// Timed sets start and end as Graph does: the wall clock of start and end
// in their time.Location, without offset, and zone, a Windows zone name
// or "UTC", which must name that same location. originalStartTimeZone is
// set to zone too.
func (b *MicrosoftBuilder) Timed(start, end time.Time, zone string) *MicrosoftBuilder {
	const layout = "2006-01-02T15:04:05.0000000"
	b.start, b.end = start, end
	b.raw["start"] = map[string]any{"dateTime": start.Format(layout), "timeZone": zone}
	b.raw["end"] = map[string]any{"dateTime": end.Format(layout), "timeZone": zone}
	b.raw["originalStartTimeZone"] = zone
	b.raw["originalEndTimeZone"] = zone
	return b
}

// AllDay makes the event all-day over the dates (end exclusive).
func (b *MicrosoftBuilder) AllDay(startDate, endDate, zone string) *MicrosoftBuilder {
	s, _ := time.Parse(time.DateOnly, startDate)
	e, _ := time.Parse(time.DateOnly, endDate)
	b.Timed(s, e, zone)
	b.raw["isAllDay"] = true
	b.raw["showAs"] = "free"
	return b
}

// Cancelled marks the event cancelled.
func (b *MicrosoftBuilder) Cancelled() *MicrosoftBuilder { return b.Set("isCancelled", true) }

// Organizer sets the organizer.
func (b *MicrosoftBuilder) Organizer(email, name string) *MicrosoftBuilder {
	return b.Set("organizer", map[string]any{"emailAddress": map[string]any{"address": email, "name": name}})
}

// Attendee adds an attendee of type ("required", "optional", "resource")
// with a response ("none", "accepted", "declined", "tentativelyAccepted",
// "organizer", "notResponded").
func (b *MicrosoftBuilder) Attendee(email, name, typ, response string) *MicrosoftBuilder {
	list, _ := b.raw["attendees"].([]any)
	b.raw["attendees"] = append(list, map[string]any{
		"type":         typ,
		"status":       map[string]any{"response": response, "time": "0001-01-01T00:00:00Z"},
		"emailAddress": map[string]any{"address": email, "name": name},
	})
	return b
}

// Teams adds a Teams online meeting.
func (b *MicrosoftBuilder) Teams(joinURL string) *MicrosoftBuilder {
	b.raw["isOnlineMeeting"] = true
	b.raw["onlineMeetingProvider"] = "teamsForBusiness"
	b.raw["onlineMeeting"] = map[string]any{"joinUrl": joinURL}
	return b
}

// Weekly makes the event a series master repeating every interval weeks
// on days ("monday", ...) until endDate (YYYY-MM-DD; empty: no end).
func (b *MicrosoftBuilder) Weekly(interval int, days []string, startDate, endDate, zone string) *MicrosoftBuilder {
	d := make([]any, len(days))
	for i, s := range days {
		d[i] = s
	}
	rng := map[string]any{"type": "noEnd", "startDate": startDate, "recurrenceTimeZone": zone, "numberOfOccurrences": 0}
	if endDate != "" {
		rng["type"], rng["endDate"] = "endDate", endDate
	}
	b.raw["type"] = "seriesMaster"
	b.raw["recurrence"] = map[string]any{
		"pattern": map[string]any{"type": "weekly", "interval": interval, "month": 0, "dayOfMonth": 0,
			"daysOfWeek": d, "firstDayOfWeek": "sunday", "index": "first"},
		"range": rng,
	}
	return b
}

// Instance makes the event an occurrence of the series master masterID.
func (b *MicrosoftBuilder) Instance(masterID string) *MicrosoftBuilder {
	b.raw["type"] = "occurrence"
	b.raw["seriesMasterId"] = masterID
	return b
}

// Raw returns the raw event.
func (b *MicrosoftBuilder) Raw() map[string]any { return b.raw }

// Event returns a Recall event on calendarID carrying the raw event, with
// Recall's start_time and end_time set from the builder's times.
func (b *MicrosoftBuilder) Event(calendarID string) Event {
	id, _ := b.raw["id"].(string)
	uid, _ := b.raw["iCalUId"].(string)
	return Event{
		CalendarID: calendarID,
		StartTime:  b.start,
		EndTime:    b.end,
		Platform:   "microsoft_outlook",
		PlatformID: id,
		ICalUID:    uid,
		Raw:        b.raw,
	}
}
