package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// ErrNotEncodable is wrapped by [CheckEncodable] for a message that some
// encoding of the API cannot carry.
var ErrNotEncodable = errors.New("cannot be encoded by every API encoding")

// Limits of google.protobuf.Timestamp (0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z) and google.protobuf.Duration (about
// ±10,000 years), as their JSON mappings define them.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
	maxDurationSeconds  = 315576000000
)

// CheckEncodable reports whether m (a calendar, an event, a change) can be
// carried by every encoding the API offers: binary protobuf over gRPC and
// protojson over REST, NDJSON and Server-Sent Events. It refuses, with an
// error naming the field and wrapping [ErrNotEncodable]:
//   - a Timestamp outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z
//     or with nanos outside 0..999,999,999;
//   - a Duration beyond ±10,000 years or with inconsistent nanos;
//   - a string (map keys included) that is not valid UTF-8;
//   - a google.protobuf.Value number that is NaN or infinite.
//
// Whatever it accepts, both encoders encode. The store refuses anything
// else, so one stored object can never end every reader that tries to
// encode it.
func CheckEncodable(m proto.Message) error {
	if m == nil {
		return nil
	}
	r := m.ProtoReflect()
	if err := checkMessage(r); err != nil {
		err.at(string(r.Descriptor().Name()))
		return err
	}
	return nil
}

// encodeError says which field cannot be encoded. Its path is built while
// the walk unwinds, so a walk that finds nothing allocates nothing.
type encodeError struct {
	path []string // innermost first
	msg  string
}

func (e *encodeError) at(segment string) { e.path = append(e.path, segment) }

func (e *encodeError) Error() string {
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		seg := e.path[i]
		if i < len(e.path)-1 && !strings.HasPrefix(seg, "[") {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String() + ": " + e.msg + ": " + ErrNotEncodable.Error()
}

func (e *encodeError) Unwrap() error { return ErrNotEncodable }

func refuse(format string, args ...any) *encodeError {
	return &encodeError{msg: fmt.Sprintf(format, args...)}
}

// checkMessage walks m. The well-known types calsync uses are checked
// through their Go types, which is much cheaper than reflection over what
// can be a large raw payload.
func checkMessage(m protoreflect.Message) *encodeError {
	if !m.IsValid() {
		return nil
	}
	switch v := m.Interface().(type) {
	case *timestamppb.Timestamp:
		return checkTimestamp(v.GetSeconds(), int64(v.GetNanos()))
	case *durationpb.Duration:
		return checkDuration(v.GetSeconds(), int64(v.GetNanos()))
	case *structpb.Struct:
		return checkStruct(v)
	case *structpb.Value:
		return checkStructValue(v)
	case *structpb.ListValue:
		return checkList(v)
	case *calsyncv1.CalendarEvent:
		return checkEvent(v)
	case *calsyncv1.Change:
		return checkChange(v)
	}
	// The fields are walked by index rather than with m.Range: a closure
	// assigning err escapes, and would cost two allocations per message.
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if err := checkField(fd, m.Get(fd)); err != nil {
			err.at(string(fd.Name()))
			return err
		}
	}
	return nil
}

// checkField checks the value v of m's field fd.
func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value) *encodeError {
	switch {
	case fd.IsList():
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			if err := checkValue(fd, l.Get(i)); err != nil {
				err.at("[" + strconv.Itoa(i) + "]")
				return err
			}
		}
	case fd.IsMap():
		var err *encodeError
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
				err = refuse("key %q is not valid UTF-8", k.String())
			} else if err = checkValue(fd.MapValue(), mv); err != nil {
				err.at("[" + strconv.Quote(k.String()) + "]")
			}
			return err == nil
		})
		return err
	default:
		return checkValue(fd, v)
	}
	return nil
}

// checkEvent checks an event through its Go fields: the store checks every
// event it writes, and again inside every change, and reflection over its
// thirty fields was most of that cost. Its nested messages other than
// timestamps and the raw payload go through checkMessage.
// TestCheckEventCoversEveryField fails when a field is added to
// CalendarEvent and not here.
func checkEvent(e *calsyncv1.CalendarEvent) *encodeError {
	strs := [...]struct {
		name, v string
	}{
		{"id", e.Id}, {"calendar_id", e.CalendarId}, {"provider", e.Provider},
		{"provider_event_id", e.ProviderEventId}, {"provider_calendar_id", e.ProviderCalendarId},
		{"platform_event_id", e.PlatformEventId}, {"title", e.Title}, {"description", e.Description},
		{"location", e.Location}, {"time_zone", e.TimeZone}, {"start_date", e.StartDate},
		{"end_date", e.EndDate}, {"recurring_master_id", e.RecurringMasterId},
		{"provider_recurring_master_id", e.ProviderRecurringMasterId}, {"ical_uid", e.IcalUid},
		{"meeting_url", e.MeetingUrl}, {"meeting_platform", e.MeetingPlatform},
	}
	for _, f := range strs {
		if !utf8.ValidString(f.v) {
			err := refuse("not valid UTF-8")
			err.at(f.name)
			return err
		}
	}
	times := [...]struct {
		name string
		v    *timestamppb.Timestamp
	}{
		{"start_time", e.StartTime}, {"end_time", e.EndTime},
		{"provider_create_time", e.ProviderCreateTime}, {"provider_update_time", e.ProviderUpdateTime},
		{"create_time", e.CreateTime}, {"update_time", e.UpdateTime},
	}
	for _, f := range times {
		if f.v == nil {
			continue
		}
		if err := checkTimestamp(f.v.GetSeconds(), int64(f.v.GetNanos())); err != nil {
			err.at(f.name)
			return err
		}
	}
	for i, r := range e.Recurrence {
		if !utf8.ValidString(r) {
			err := refuse("not valid UTF-8")
			err.at("[" + strconv.Itoa(i) + "]")
			err.at("recurrence")
			return err
		}
	}
	if e.Organizer != nil {
		if err := checkMessage(e.Organizer.ProtoReflect()); err != nil {
			err.at("organizer")
			return err
		}
	}
	for i, a := range e.Attendees {
		if err := checkMessage(a.ProtoReflect()); err != nil {
			err.at("[" + strconv.Itoa(i) + "]")
			err.at("attendees")
			return err
		}
	}
	if e.Raw != nil {
		if err := checkStruct(e.Raw); err != nil {
			err.at("raw")
			return err
		}
	}
	return nil
}

// checkChange checks a change through its Go fields, in the order the
// reflective walk took: the store checks every change it appends, and
// reflection over it was half of encoding one.
// TestCheckChangeCoversEveryField fails when a field is added to Change
// and not here.
func checkChange(c *calsyncv1.Change) *encodeError {
	if !utf8.ValidString(c.Cursor) {
		err := refuse("not valid UTF-8")
		err.at("cursor")
		return err
	}
	for _, f := range [...]struct {
		name string
		ev   *calsyncv1.CalendarEvent
		cal  *calsyncv1.Calendar
	}{
		{name: "event", ev: c.Event}, {name: "calendar", cal: c.Calendar},
		{name: "previous_event", ev: c.PreviousEvent}, {name: "previous_calendar", cal: c.PreviousCalendar},
	} {
		var err *encodeError
		switch {
		case f.ev != nil:
			err = checkEvent(f.ev)
		case f.cal != nil:
			err = checkMessage(f.cal.ProtoReflect())
		}
		if err != nil {
			err.at(f.name)
			return err
		}
	}
	for i, name := range c.ChangedFields {
		if !utf8.ValidString(name) {
			err := refuse("not valid UTF-8")
			err.at("[" + strconv.Itoa(i) + "]")
			err.at("changed_fields")
			return err
		}
	}
	if t := c.CommitTime; t != nil {
		if err := checkTimestamp(t.GetSeconds(), int64(t.GetNanos())); err != nil {
			err.at("commit_time")
			return err
		}
	}
	return nil
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) *encodeError {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			return refuse("not valid UTF-8")
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessage(v.Message())
	}
	return nil
}

func checkStruct(s *structpb.Struct) *encodeError {
	for k, v := range s.GetFields() {
		if !utf8.ValidString(k) {
			return refuse("key %q is not valid UTF-8", k)
		}
		if err := checkStructValue(v); err != nil {
			err.at("[" + strconv.Quote(k) + "]")
			return err
		}
	}
	return nil
}

func checkList(l *structpb.ListValue) *encodeError {
	for i, v := range l.GetValues() {
		if err := checkStructValue(v); err != nil {
			err.at("[" + strconv.Itoa(i) + "]")
			return err
		}
	}
	return nil
}

func checkStructValue(v *structpb.Value) *encodeError {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if f := k.NumberValue; math.IsNaN(f) || math.IsInf(f, 0) {
			return refuse("number %v", f)
		}
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			return refuse("not valid UTF-8")
		}
	case *structpb.Value_StructValue:
		return checkStruct(k.StructValue)
	case *structpb.Value_ListValue:
		return checkList(k.ListValue)
	}
	return nil
}

func checkTimestamp(s, n int64) *encodeError {
	if s < minTimestampSeconds || s > maxTimestampSeconds || n < 0 || n > 999_999_999 {
		return refuse("timestamp (%d s, %d ns) outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z", s, n)
	}
	return nil
}

func checkDuration(s, n int64) *encodeError {
	if s < -maxDurationSeconds || s > maxDurationSeconds || n <= -1e9 || n >= 1e9 ||
		(s > 0 && n < 0) || (s < 0 && n > 0) {
		return refuse("duration (%d s, %d ns) out of range", s, n)
	}
	return nil
}

// InTimestampRange reports whether t fits a google.protobuf.Timestamp, the
// only way the API carries instants: 0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z.
func InTimestampRange(t time.Time) bool {
	s := t.Unix()
	return s >= minTimestampSeconds && s <= maxTimestampSeconds
}
