package rowcodec

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// headOf is what a store's writer puts in a change row's columns (see
// AppendChange in both stores): ReadChangeHead must read the same.
func headOf(c *calsyncv1.Change, commit time.Time) (typ calsyncv1.ChangeType, calendarID, provider string, at time.Time) {
	calendarID, provider = c.GetEvent().GetCalendarId(), c.GetEvent().GetProvider()
	if c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED {
		calendarID, provider = c.GetCalendar().GetId(), c.GetCalendar().GetProvider()
	}
	return c.GetType(), calendarID, provider, time.Unix(0, commit.UnixNano()).UTC()
}

// ReadChangeHead reads from every change a store writes what the row's
// columns hold, whichever fields the change has besides, and gives up on
// an encoding that lacks any of it or does not parse.
func TestReadChangeHead(t *testing.T) {
	full := &calsyncv1.Change{}
	populate(t, full.ProtoReflect())
	commit := time.Unix(1_700_000_000, 123_456_789).UTC()
	changes := map[string]func(*calsyncv1.Change){
		"created": func(c *calsyncv1.Change) {
			c.Type, c.PreviousEvent, c.Calendar, c.PreviousCalendar, c.ChangedFields = calsyncv1.ChangeType_CHANGE_TYPE_CREATED, nil, nil, nil, nil
		},
		"updated, every field": func(c *calsyncv1.Change) {
			c.Type = calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
			c.PreviousEvent.CalendarId, c.PreviousEvent.Provider = "cal_previous", "elsewhere"
		},
		"deleted": func(c *calsyncv1.Change) {
			c.Type, c.Calendar, c.PreviousCalendar = calsyncv1.ChangeType_CHANGE_TYPE_DELETED, nil, nil
		},
		"calendar updated": func(c *calsyncv1.Change) {
			c.Type, c.Event, c.PreviousEvent = calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, nil, nil
			c.Calendar.Id, c.Calendar.Provider = "cal_the_calendar", "recall"
			c.PreviousCalendar.Id, c.PreviousCalendar.Provider = "cal_before", "postpress"
		},
		"calendar updated, with an event": func(c *calsyncv1.Change) {
			c.Type = calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED
			c.Calendar.Id = "cal_not_the_event's"
		},
	}
	for name, vary := range changes {
		c := proto.Clone(full).(*calsyncv1.Change)
		vary(c)
		wantType, wantCal, wantProvider, wantAt := headOf(c, commit)
		data, err := EncodeChange(c, commit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		h, ok := ReadChangeHead(data)
		if !ok {
			t.Fatalf("%s: ReadChangeHead gave up on %x", name, data)
		}
		if h.Type != wantType || string(h.CalendarID) != wantCal || string(h.Provider) != wantProvider || h.CommitTime != wantAt {
			t.Errorf("%s: read %v %q %q %v, want %v %q %q %v", name, h.Type, h.CalendarID, h.Provider, h.CommitTime,
				wantType, wantCal, wantProvider, wantAt)
		}
		// Every shorter prefix is cut inside or before the commit time,
		// the last field: none may be read.
		for n := range len(data) {
			if h, ok := ReadChangeHead(data[:n]); ok {
				t.Fatalf("%s: the first %d of %d bytes read as %v", name, n, len(data), h)
			}
		}
	}

	valid := proto.Clone(full).(*calsyncv1.Change)
	valid.Type = calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
	lacking := map[string]func(*calsyncv1.Change){
		"no commit time":      func(c *calsyncv1.Change) { c.CommitTime = nil },
		"no type":             func(c *calsyncv1.Change) { c.Type = calsyncv1.ChangeType_CHANGE_TYPE_UNSPECIFIED },
		"no event":            func(c *calsyncv1.Change) { c.Event = nil },
		"an event's calendar": func(c *calsyncv1.Change) { c.Event.CalendarId = "" },
		"an event's provider": func(c *calsyncv1.Change) { c.Event.Provider = "" },
		"a calendar's id": func(c *calsyncv1.Change) {
			c.Type, c.Calendar.Id = calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, ""
		},
		"a calendar":           func(c *calsyncv1.Change) { c.Type, c.Calendar = calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, nil },
		"nanos out of range":   func(c *calsyncv1.Change) { c.CommitTime.Nanos = 1_000_000_000 },
		"negative nanoseconds": func(c *calsyncv1.Change) { c.CommitTime.Nanos = -1 },
	}
	for name, vary := range lacking {
		c := proto.Clone(valid).(*calsyncv1.Change)
		vary(c)
		data, err := Marshal(c) // as a change written another way would be
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h, ok := ReadChangeHead(data); ok {
			t.Errorf("%s: read %v from a change without it", name, h)
		}
	}

	// A field of the change read twice is left to the columns: a
	// decoder would merge the two.
	data, err := EncodeChange(valid, commit)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ReadChangeHead(append(append([]byte{}, data...), data...)); ok {
		t.Error("a change encoded twice over was read")
	}
}

// encodedFullUpdate encodes an UPDATED change with every field set.
func encodedFullUpdate(tb testing.TB) []byte {
	tb.Helper()
	c := &calsyncv1.Change{}
	populate(tb, c.ProtoReflect())
	c.Type = calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
	data, err := EncodeChange(c, time.Unix(1_700_000_000, 5))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// ReadChangeHead allocates nothing: it runs for every change a catching-up
// stream reads.
func TestReadChangeHeadAllocations(t *testing.T) {
	data := encodedFullUpdate(t)
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := ReadChangeHead(data); !ok {
			t.Fatal("not read")
		}
	}); n != 0 {
		t.Errorf("ReadChangeHead allocated %v times", n)
	}
}

// BenchmarkReadChangeHead reads the head of an updated change with every
// field set, as a catching-up stream does for each change it reads.
func BenchmarkReadChangeHead(b *testing.B) {
	data := encodedFullUpdate(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ReadChangeHead(data); !ok {
			b.Fatal("not read")
		}
	}
}
