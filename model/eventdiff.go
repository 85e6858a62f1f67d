package model

import (
	"bytes"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// eventChangedFields is [ChangedFields] for two events, field by field
// through the generated accessors: every applied event is compared with
// the one it replaces, and reflection made that a tenth of applying a
// postpress webhook. It reports exactly what the reflective comparison
// reports; TestEventChangedFieldsMatchesReflection fails when a field is
// added to CalendarEvent and not here.
func eventChangedFields(a, b *calsyncv1.CalendarEvent) []string {
	var changed []string
	same := func(eq bool, name string) {
		if !eq {
			changed = append(changed, name)
		}
	}
	same(a.GetId() == b.GetId(), "id")
	same(a.GetCalendarId() == b.GetCalendarId(), "calendar_id")
	same(a.GetProvider() == b.GetProvider(), "provider")
	same(a.GetProviderEventId() == b.GetProviderEventId(), "provider_event_id")
	same(a.GetProviderCalendarId() == b.GetProviderCalendarId(), "provider_calendar_id")
	same(a.GetPlatformEventId() == b.GetPlatformEventId(), "platform_event_id")
	same(a.GetTitle() == b.GetTitle(), "title")
	same(a.GetDescription() == b.GetDescription(), "description")
	same(a.GetLocation() == b.GetLocation(), "location")
	same(sameTimestamp(a.GetStartTime(), b.GetStartTime()), "start_time")
	same(sameTimestamp(a.GetEndTime(), b.GetEndTime()), "end_time")
	same(a.GetTimeZone() == b.GetTimeZone(), "time_zone")
	same(a.GetAllDay() == b.GetAllDay(), "all_day")
	same(a.GetStartDate() == b.GetStartDate(), "start_date")
	same(a.GetEndDate() == b.GetEndDate(), "end_date")
	same(a.GetStatus() == b.GetStatus(), "status")
	same(samePerson(a.GetOrganizer(), b.GetOrganizer()), "organizer")
	same(slices.EqualFunc(a.GetAttendees(), b.GetAttendees(), sameAttendee), "attendees")
	same(a.GetAttendeesHidden() == b.GetAttendeesHidden(), "attendees_hidden")
	same(slices.Equal(a.GetRecurrence(), b.GetRecurrence()), "recurrence")
	same(a.GetRecurringMasterId() == b.GetRecurringMasterId(), "recurring_master_id")
	same(a.GetProviderRecurringMasterId() == b.GetProviderRecurringMasterId(), "provider_recurring_master_id")
	same(a.GetIcalUid() == b.GetIcalUid(), "ical_uid")
	same(a.GetMeetingUrl() == b.GetMeetingUrl(), "meeting_url")
	same(a.GetMeetingPlatform() == b.GetMeetingPlatform(), "meeting_platform")
	same(a.GetVisibility() == b.GetVisibility(), "visibility")
	same(a.GetTransparency() == b.GetTransparency(), "transparency")
	same(sameTimestamp(a.GetProviderCreateTime(), b.GetProviderCreateTime()), "provider_create_time")
	// provider_update_time is bookkeeping.
	same(a.GetDeleted() == b.GetDeleted(), "deleted")
	// create_time, update_time and raw are bookkeeping.
	return changed
}

// The comparisons below are proto.Equal's for these messages: a set
// message differs from an unset one, even when empty, and fields the
// message does not know count.

func sameTimestamp(a, b *timestamppb.Timestamp) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetSeconds() == b.GetSeconds() && a.GetNanos() == b.GetNanos() && sameUnknown(a, b)
}

func samePerson(a, b *calsyncv1.Person) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetEmail() == b.GetEmail() && a.GetDisplayName() == b.GetDisplayName() && sameUnknown(a, b)
}

func sameAttendee(a, b *calsyncv1.Attendee) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetEmail() == b.GetEmail() && a.GetDisplayName() == b.GetDisplayName() &&
		a.GetResponseStatus() == b.GetResponseStatus() && a.GetOptional() == b.GetOptional() &&
		a.GetResource() == b.GetResource() && sameUnknown(a, b)
}

func sameUnknown(a, b proto.Message) bool {
	return bytes.Equal(a.ProtoReflect().GetUnknown(), b.ProtoReflect().GetUnknown())
}
