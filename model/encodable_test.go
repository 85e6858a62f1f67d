package model

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// TestCheckEncodable checks each refusal against the encoders themselves:
// what CheckEncodable accepts both encode, and every refusal is one of
// them would fail on.
func TestCheckEncodable(t *testing.T) {
	latest := time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
	earliest := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		m    proto.Message
		ok   bool
	}{
		{"Bounds", &calsyncv1.CalendarEvent{StartTime: timestamppb.New(earliest), EndTime: timestamppb.New(latest)}, true},
		{"EmptyTimestamp", &calsyncv1.CalendarEvent{StartTime: &timestamppb.Timestamp{}}, true},
		{"Nil", (*calsyncv1.CalendarEvent)(nil), true},
		{"AfterLatest", &calsyncv1.CalendarEvent{EndTime: timestamppb.New(latest.Add(time.Nanosecond))}, false},
		{"BeforeEarliest", &calsyncv1.CalendarEvent{StartTime: timestamppb.New(earliest.Add(-time.Nanosecond))}, false},
		{"NegativeNanos", &calsyncv1.CalendarEvent{StartTime: &timestamppb.Timestamp{Nanos: -1}}, false},
		{"BadUTF8", &calsyncv1.CalendarEvent{Organizer: &calsyncv1.Person{DisplayName: "\xc3("}}, false},
		{"BadUTF8InList", &calsyncv1.CalendarEvent{Recurrence: []string{"RRULE:FREQ=DAILY", "\xff"}}, false},
		{"NaNInStruct", &calsyncv1.CalendarEvent{Raw: &structpb.Struct{Fields: map[string]*structpb.Value{
			"a": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(math.NaN())}}),
		}}}, false},
		{"InfInStruct", &calsyncv1.Calendar{Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(math.Inf(1))}}}, false},
		{"NestedInChange", &calsyncv1.Change{Calendar: &calsyncv1.Calendar{StatusChanges: []*calsyncv1.CalendarStatusChange{
			{Time: &timestamppb.Timestamp{Seconds: math.MaxInt64}},
		}}}, false},
		{"Duration", &calsyncv1.WatchEventsRequest{BookmarkInterval: durationpb.New(time.Minute)}, true},
		{"DurationTooLong", &calsyncv1.WatchEventsRequest{BookmarkInterval: &durationpb.Duration{Seconds: 315576000001}}, false},
		{"DurationMixedSigns", &calsyncv1.WatchEventsRequest{BookmarkInterval: &durationpb.Duration{Seconds: 1, Nanos: -1}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckEncodable(c.m)
			if (err == nil) != c.ok {
				t.Fatalf("CheckEncodable = %v, want ok = %v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrNotEncodable) {
				t.Fatalf("error %v does not wrap ErrNotEncodable", err)
			}
			_, jsonErr := protojson.Marshal(c.m)
			_, binErr := proto.Marshal(c.m)
			if c.ok && (jsonErr != nil || binErr != nil) {
				t.Fatalf("accepted, but JSON: %v, binary: %v", jsonErr, binErr)
			}
			if !c.ok && jsonErr == nil && binErr == nil {
				t.Fatalf("refused (%v), but both encoders encode it", err)
			}
		})
	}
}

// BenchmarkCheckEncodable measures the check on a typical event with its
// raw payload, next to the binary encoding every write does anyway.
func BenchmarkCheckEncodable(b *testing.B) {
	raw, err := structpb.NewStruct(map[string]any{
		"event": "calendar_event_created", "account_id": "a4qFy0liRAGo-oZ2YFpirQ", "id": "5m8lnvb64dt2uuaq99k4685eeq",
		"calendar_id": "owner@example.com", "title": "Meeting with customer", "is_all_day": false, "attendees": []any{},
		"start":      map[string]any{"date_time": "2026-01-20T14:30:00+01:00", "time_zone": "Europe/Paris"},
		"end":        map[string]any{"date_time": "2026-01-20T15:30:00+01:00", "time_zone": "Europe/Paris"},
		"organizer":  map[string]any{"email": "organizer@example.com", "display_name": ""},
		"created_at": "2026-01-16T16:14:01.000Z", "updated_at": "2026-01-16T16:14:02.021Z", "color": "#039BE5",
	})
	if err != nil {
		b.Fatal(err)
	}
	now := timestamppb.Now()
	ev := &calsyncv1.CalendarEvent{
		Id: "evt_x", CalendarId: "cal_x", Provider: "postpress", Title: "Meeting with customer",
		StartTime: now, EndTime: now, ProviderUpdateTime: now, CreateTime: now, UpdateTime: now,
		Organizer: &calsyncv1.Person{Email: "organizer@example.com"},
		Attendees: []*calsyncv1.Attendee{{Email: "a@example.com"}, {Email: "b@example.com"}},
		Raw:       raw,
	}
	b.Run("CheckEncodable", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := CheckEncodable(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Checking an encodable event allocates nothing, raw payload included: the
// store checks every event it writes. (A repeated field costs the two
// allocations of its reflection wrapper, so the event here has none.)
func TestCheckEncodableAllocatesNothing(t *testing.T) {
	raw, err := structpb.NewStruct(map[string]any{"title": "Standup", "attendees": []any{map[string]any{"email": "a@example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	ev := &calsyncv1.CalendarEvent{
		Id: "e1", Title: "Standup",
		StartTime: timestamppb.Now(), Organizer: &calsyncv1.Person{DisplayName: "Ann"}, Raw: raw,
	}
	if n := testing.AllocsPerRun(20, func() {
		if err := CheckEncodable(ev); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("CheckEncodable of an encodable event allocates %v times, want 0", n)
	}
}

// checkEvent, which checks events through their Go fields, refuses an
// unencodable value in every field that can hold one, naming the field:
// a field added to CalendarEvent and not to checkEvent fails here.
func TestCheckEventCoversEveryField(t *testing.T) {
	invalidMessage := func(m protoreflect.Message) {
		switch v := m.Interface().(type) {
		case *timestamppb.Timestamp:
			v.Seconds = math.MaxInt64
			return
		case *structpb.Struct:
			v.Fields = map[string]*structpb.Value{"k": structpb.NewNumberValue(math.NaN())}
			return
		}
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			if fd := fields.Get(i); fd.Kind() == protoreflect.StringKind && !fd.IsList() {
				m.Set(fd, protoreflect.ValueOfString("\xff"))
				return
			}
		}
		t.Fatalf("no way to make %s unencodable", m.Descriptor().FullName())
	}
	fields := (&calsyncv1.CalendarEvent{}).ProtoReflect().Descriptor().Fields()
	checked := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		ev := &calsyncv1.CalendarEvent{}
		m := ev.ProtoReflect()
		switch {
		case fd.Kind() == protoreflect.EnumKind, fd.Kind() == protoreflect.BoolKind:
			continue // every value of these encodes
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			m.Mutable(fd).List().Append(protoreflect.ValueOfString("\xff"))
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := m.Mutable(fd).List()
			e := l.NewElement()
			invalidMessage(e.Message())
			l.Append(e)
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("\xff"))
		case fd.Kind() == protoreflect.MessageKind:
			invalidMessage(m.Mutable(fd).Message())
		default:
			t.Fatalf("field %s of kind %v: teach this test how to make it unencodable", fd.Name(), fd.Kind())
		}
		checked++
		err := CheckEncodable(ev)
		if !errors.Is(err, ErrNotEncodable) {
			t.Errorf("an unencodable %s: CheckEncodable = %v, want ErrNotEncodable", fd.Name(), err)
			continue
		}
		if !strings.Contains(err.Error(), "CalendarEvent."+string(fd.Name())) {
			t.Errorf("an unencodable %s: error %q does not name the field", fd.Name(), err)
		}
		// Inside a change, as the store checks it.
		if err := CheckEncodable(&calsyncv1.Change{Event: ev}); !errors.Is(err, ErrNotEncodable) {
			t.Errorf("a change whose event has an unencodable %s: CheckEncodable = %v, want ErrNotEncodable", fd.Name(), err)
		}
	}
	if checked < 25 {
		t.Errorf("checked %d fields, want every string, timestamp and message field", checked)
	}
}

// BenchmarkCheckEncodableChange measures the check the store makes of a
// change's log entry: an update, with the event before and after.
func BenchmarkCheckEncodableChange(b *testing.B) {
	ev := func(title string) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{
			Id: "e1", CalendarId: "c1", Provider: "postpress", ProviderEventId: "p1", Title: title,
			Description: "Weekly sync", Location: "Room 4", StartTime: timestamppb.Now(), EndTime: timestamppb.Now(),
			TimeZone: "Europe/Paris", Organizer: &calsyncv1.Person{Email: "a@example.com", DisplayName: "Ann"},
			Attendees:  []*calsyncv1.Attendee{{Email: "b@example.com"}, {Email: "c@example.com"}},
			CreateTime: timestamppb.Now(), UpdateTime: timestamppb.Now(), ProviderUpdateTime: timestamppb.Now(),
		}
	}
	c := &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: ev("New"), PreviousEvent: ev("Old"),
		ChangedFields: []string{"title"}, CommitTime: timestamppb.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckEncodable(c); err != nil {
			b.Fatal(err)
		}
	}
}

// checkReflectively is the walk CheckEncodable made of a change before it
// had a path of its own for changes: every field through reflection.
func checkReflectively(m proto.Message) error {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !r.Has(fd) {
			continue
		}
		if err := checkField(fd, r.Get(fd)); err != nil {
			err.at(string(fd.Name()))
			err.at(string(r.Descriptor().Name()))
			return err
		}
	}
	return nil
}

// CheckEncodable refuses a change for any field that cannot be encoded,
// including fields added to Change after its Go-typed check was written,
// with the error the reflective walk gives, naming the field.
func TestCheckChangeCoversEveryField(t *testing.T) {
	spoilMessage := func(m protoreflect.Message) {
		switch v := m.Interface().(type) {
		case *timestamppb.Timestamp:
			v.Seconds = math.MaxInt64
			return
		}
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			if fd := fields.Get(i); fd.Kind() == protoreflect.StringKind && !fd.IsList() {
				m.Set(fd, protoreflect.ValueOfString("\xff"))
				return
			}
		}
		t.Fatalf("no way to make %s unencodable", m.Descriptor().FullName())
	}
	fields := (&calsyncv1.Change{}).ProtoReflect().Descriptor().Fields()
	checked := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		c := &calsyncv1.Change{}
		m := c.ProtoReflect()
		switch {
		case fd.Kind() == protoreflect.EnumKind, fd.Kind() == protoreflect.BoolKind:
			continue // every value of these encodes
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfString("ok"))
			l.Append(protoreflect.ValueOfString("\xff"))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("\xff"))
		case fd.Kind() == protoreflect.MessageKind && !fd.IsList():
			spoilMessage(m.Mutable(fd).Message())
		default:
			t.Fatalf("field %s of kind %v: teach this test how to make it unencodable", fd.Name(), fd.Kind())
		}
		checked++
		err := CheckEncodable(c)
		if !errors.Is(err, ErrNotEncodable) {
			t.Errorf("an unencodable %s: CheckEncodable = %v, want ErrNotEncodable", fd.Name(), err)
			continue
		}
		if want := checkReflectively(c); err.Error() != want.Error() {
			t.Errorf("an unencodable %s: CheckEncodable = %q, want %q", fd.Name(), err, want)
		}
		if !strings.Contains(err.Error(), "Change."+string(fd.Name())) {
			t.Errorf("an unencodable %s: error %q does not name the field", fd.Name(), err)
		}
	}
	if checked < 6 {
		t.Errorf("checked %d fields, want every string, timestamp and message field", checked)
	}
	// A good change with every field set passes.
	ev := &calsyncv1.CalendarEvent{Id: "e", StartTime: timestamppb.Now()}
	good := &calsyncv1.Change{Cursor: "1", Event: ev, PreviousEvent: ev, Calendar: &calsyncv1.Calendar{Id: "c"},
		PreviousCalendar: &calsyncv1.Calendar{Id: "c"}, ChangedFields: []string{"title"}, CommitTime: timestamppb.Now()}
	if err := CheckEncodable(good); err != nil {
		t.Errorf("CheckEncodable of a good change: %v", err)
	}
}
